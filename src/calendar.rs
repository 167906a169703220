//! Maintenance windows as iTIP/iMIP calendar events (RFC 5545, RFC 6047).
