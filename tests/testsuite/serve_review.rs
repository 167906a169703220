//! `notify serve`: tests being written.
