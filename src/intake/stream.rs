//! Inputs read as a stream and parsed on worker threads, yielded in input order, in bounded
//! memory.
//!
//! One [`Producer`] walks the inputs in order (paths, the files of folders, the messages of an
//! mbox, standard input) and hands out [`Unit`]s: a file to read and recognise, a Maildir file,
//! one message already split from an mbox. Worker threads (one per core) take units in turn,
//! read and parse them, and a [`Stream`] yields what they made in the order the units were
//! handed out. Between being handed out and being yielded there are at most [`WINDOW`] units
//! and about [`BUDGET`] bytes of input (plus one unit over it), so memory stays bounded whatever
//! the input: a 1 GB mbox or a folder of 100,000 files. The stream is woken for results a batch
//! at a time and workers take a few files of a folder at once, so that they seldom wait on each
//! other. A folder's files of up to [`SMALL_FILE`] bytes (most messages) are opened, read and
//! recognised by the worker that takes them, not by the producer, so that no worker waits on
//! another's reads. No thread runs and no file is open before the first item is asked for.

use std::collections::VecDeque;
use std::fs::File;
use std::io::{self, BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};

use super::mailbox::{self, MboxItem, MboxReader};
use super::{IntakeError, MAX_INPUT_BYTES, READ_BUFFER};

/// Units handed out and not yet taken from the stream, at most.
const WINDOW: usize = 64;
/// Bytes of input handed out and not yet taken from the stream: no unit is handed out beyond
/// this (but one always is, so a message of up to the size limit goes through alone).
const BUDGET: u64 = 16 * 1024 * 1024;
/// Worker threads, at most (one per core up to this).
const MAX_WORKERS: usize = 8;

/// Something to read, in the order the producer will come to it.
pub(super) enum Entry {
    /// A path given by itself (`-` for standard input): a folder is listed when its turn comes,
    /// a file is recognised by what it holds (an mbox is split).
    Path { input: usize, path: PathBuf },
    /// A file of a folder: recognised by what it holds (an mbox is split), or, in a Maildir, a
    /// message whatever it holds. `size` as listed.
    File {
        input: usize,
        path: PathBuf,
        maildir: bool,
        size: u64,
    },
    /// An mbox file, already recognised: opened again when its turn comes.
    Mbox {
        input: usize,
        path: PathBuf,
        origin: String,
    },
    /// An mbox already being read (standard input).
    Reader {
        input: usize,
        path: PathBuf,
        origin: String,
        reader: Box<dyn BufRead + Send>,
    },
}

/// The entries of one folder, in order (a Maildir's `new/` then `cur/`, each by name).
pub(super) fn folder_entries(input: usize, dir: &Path) -> Result<Vec<Entry>, IntakeError> {
    let listing = mailbox::list_folder(dir)?;
    let maildir = listing.maildir;
    Ok(listing
        .files
        .into_iter()
        .map(|(path, size)| Entry::File {
            input,
            path,
            maildir,
            size,
        })
        .collect())
}

/// One piece of work for a worker, from input number `input` (its place on the command line).
pub(super) struct Unit {
    pub input: usize,
    /// Bytes it holds or will read, for the memory budget.
    bytes: u64,
    pub kind: UnitKind,
}

pub(super) enum UnitKind {
    /// One message of an mbox.
    Message { origin: String, raw: Vec<u8> },
    /// A message over the size limit, not kept (`size` when known).
    Oversized { origin: String, size: Option<u64> },
    /// A Maildir file: a message, read by the worker.
    MaildirFile { path: PathBuf },
    /// A file or standard input to read whole (up to the limit) and recognise: `head` is what
    /// was read of it to see that it is not an mbox, `rest` the rest (`None` when `head` is all
    /// of it); `size` when known.
    Whole {
        path: PathBuf,
        origin: String,
        head: Vec<u8>,
        rest: Option<Box<dyn Read + Send>>,
        size: Option<u64>,
    },
    /// What could not be read, in its place.
    Failed(IntakeError),
}

/// What a worker draws from the producer: a unit, or a small file of a folder that the worker
/// opens itself ([`run`]).
enum Task {
    Unit(Unit),
    /// A file of a folder (not a Maildir) listed at `size` bytes, at most [`SMALL_FILE`]: read
    /// and recognised as the producer would ([`Producer::open_file`]), so an mbox in it is split
    /// into one task's items.
    Listed {
        input: usize,
        path: PathBuf,
        size: u64,
    },
}

impl Task {
    /// Bytes it holds or will read, for the memory budget.
    fn bytes(&self) -> u64 {
        match self {
            Task::Unit(unit) => unit.bytes,
            Task::Listed { size, .. } => *size,
        }
    }
}

/// An mbox being split: one message at a time.
struct Split {
    input: usize,
    path: PathBuf,
    origin: String,
    reader: MboxReader<Box<dyn BufRead + Send>>,
    count: usize,
    /// Read from a file (not standard input, which may be slow to give the next message).
    quick: bool,
}

/// Walks the entries in order and hands out units (only ever on one thread at a time).
pub(super) struct Producer {
    queue: VecDeque<Entry>,
    split: Option<Split>,
}

impl Producer {
    pub fn new(entries: Vec<Entry>) -> Self {
        Producer {
            queue: entries.into(),
            split: None,
        }
    }

    /// Is the next unit handed out without waiting on standard input (which may be slow to
    /// give it)?
    fn next_is_quick(&self) -> bool {
        match (&self.split, self.queue.front()) {
            (Some(split), _) => split.quick,
            (None, Some(Entry::Path { path, .. })) => path != Path::new("-"),
            (None, Some(Entry::File { .. } | Entry::Mbox { .. })) => true,
            (None, Some(Entry::Reader { .. }) | None) => false,
        }
    }

    fn next_unit(&mut self) -> Option<Unit> {
        loop {
            match self.next_task(false)? {
                Task::Unit(unit) => return Some(unit),
                // Not made when not asked for; opened here if it were.
                Task::Listed { input, path, size } => {
                    if let Some(unit) = self.open_file(input, path, Some(size)) {
                        return Some(unit);
                    }
                }
            }
        }
    }

    /// The next task: a unit, or (when `defer`) a small file of a folder left unopened.
    fn next_task(&mut self, defer: bool) -> Option<Task> {
        loop {
            if let Some(split) = &mut self.split {
                let item = split.reader.next();
                if item.is_some() {
                    split.count += 1;
                }
                let origin = || format!("{}:{}", split.origin, split.count);
                let unit = |kind| Unit {
                    input: split.input,
                    bytes: 0,
                    kind,
                };
                match item {
                    Some(Ok(MboxItem::Message(raw))) => {
                        let bytes = raw.len() as u64;
                        let origin = origin();
                        return Some(Task::Unit(Unit {
                            bytes,
                            ..unit(UnitKind::Message { origin, raw })
                        }));
                    }
                    Some(Ok(MboxItem::Oversized { size })) => {
                        return Some(Task::Unit(unit(UnitKind::Oversized {
                            origin: origin(),
                            size: Some(size),
                        })));
                    }
                    Some(Err(source)) => {
                        let failed = unit(UnitKind::Failed(IntakeError::Read {
                            path: split.path.clone(),
                            source,
                        }));
                        self.split = None;
                        return Some(Task::Unit(failed));
                    }
                    None => self.split = None,
                }
                continue;
            }
            match self.queue.pop_front()? {
                // Its size is known from the folder's listing, which found it a regular file.
                Entry::File {
                    input,
                    path,
                    maildir: false,
                    size,
                } if defer && size <= SMALL_FILE => {
                    return Some(Task::Listed { input, path, size });
                }
                entry => {
                    if let Some(unit) = self.open(entry) {
                        return Some(Task::Unit(unit));
                    }
                }
            }
        }
    }

    /// Start on one entry: a unit, or `None` when it became a split mbox or more entries.
    fn open(&mut self, entry: Entry) -> Option<Unit> {
        match entry {
            Entry::Path { input, path } => {
                if path == Path::new("-") {
                    let stdin: Box<dyn BufRead + Send> =
                        Box::new(BufReader::with_capacity(READ_BUFFER, io::stdin()));
                    return self.recognise(input, path, "-".into(), stdin, None, 5);
                }
                let failed = |source| Unit {
                    input,
                    bytes: 0,
                    kind: UnitKind::Failed(IntakeError::Read {
                        path: path.clone(),
                        source,
                    }),
                };
                let meta = match std::fs::metadata(&path) {
                    Ok(m) => m,
                    Err(e) => return Some(failed(e)),
                };
                if meta.is_dir() {
                    match folder_entries(input, &path) {
                        Ok(entries) => {
                            for e in entries.into_iter().rev() {
                                self.queue.push_front(e);
                            }
                            None
                        }
                        Err(e) => Some(Unit {
                            input,
                            bytes: 0,
                            kind: UnitKind::Failed(e),
                        }),
                    }
                } else {
                    self.open_file(input, path, None)
                }
            }
            Entry::File {
                input,
                path,
                maildir: true,
                size,
            } => Some(Unit {
                input,
                bytes: size,
                kind: UnitKind::MaildirFile { path },
            }),
            // Its size is known from the folder's listing, which found it a regular file.
            Entry::File {
                input, path, size, ..
            } => self.open_file(input, path, Some(size)),
            Entry::Mbox {
                input,
                path,
                origin,
            } => match File::open(&path) {
                Ok(f) => {
                    self.split = Some(Split {
                        input,
                        path,
                        origin,
                        reader: MboxReader::new(
                            Box::new(BufReader::with_capacity(READ_BUFFER, f)),
                            MAX_INPUT_BYTES,
                        ),
                        count: 0,
                        quick: true,
                    });
                    None
                }
                Err(source) => Some(Unit {
                    input,
                    bytes: 0,
                    kind: UnitKind::Failed(IntakeError::Read { path, source }),
                }),
            },
            Entry::Reader {
                input,
                path,
                origin,
                reader,
            } => {
                self.split = Some(Split {
                    input,
                    path,
                    origin,
                    reader: MboxReader::new(reader, MAX_INPUT_BYTES),
                    count: 0,
                    quick: false,
                });
                None
            }
        }
    }

    /// A file recognised by what it holds; `listed` is its size when a folder's listing gave it
    /// (asked of the open file otherwise).
    fn open_file(&mut self, input: usize, path: PathBuf, listed: Option<u64>) -> Option<Unit> {
        let file = match File::open(&path) {
            Ok(f) => f,
            Err(source) => {
                return Some(Unit {
                    input,
                    bytes: 0,
                    kind: UnitKind::Failed(IntakeError::Read { path, source }),
                })
            }
        };
        let size = listed.or_else(|| {
            file.metadata()
                .ok()
                .filter(|m| m.is_file())
                .map(|m| m.len())
        });
        let origin = path.display().to_string();
        // A file of known size is read in one go when it is small, as most messages are (the
        // worker's next read then finds its end).
        let first_read = size.map_or(5, |s| {
            usize::try_from(s)
                .unwrap_or(usize::MAX)
                .saturating_add(1)
                .clamp(5, FIRST_READ)
        });
        self.recognise(input, path, origin, Box::new(file), size, first_read)
    }

    /// Read the first bytes of `reader` (at least 5 unless it ends sooner, at most
    /// `first_read`): an mbox is split from here on; anything else is a unit to read whole.
    fn recognise<R: Read + Send + 'static>(
        &mut self,
        input: usize,
        path: PathBuf,
        origin: String,
        mut reader: R,
        size: Option<u64>,
        first_read: usize,
    ) -> Option<Unit> {
        let (head, ended) = match read_head(&mut reader, first_read) {
            Ok(read) => read,
            Err(source) => {
                return Some(Unit {
                    input,
                    bytes: 0,
                    kind: UnitKind::Failed(IntakeError::Read { path, source }),
                })
            }
        };
        if head.starts_with(b"From ") {
            let whole = io::Cursor::new(head).chain(reader);
            self.split = Some(Split {
                input,
                path,
                origin,
                reader: MboxReader::new(
                    Box::new(BufReader::with_capacity(READ_BUFFER, whole)),
                    MAX_INPUT_BYTES,
                ),
                count: 0,
                // A file of known size (not standard input or a pipe).
                quick: size.is_some(),
            });
            return None;
        }
        Some(Unit {
            input,
            bytes: size.unwrap_or(0).min(MAX_INPUT_BYTES as u64 + 1),
            kind: UnitKind::Whole {
                path,
                origin,
                head,
                rest: (!ended).then(|| Box::new(reader) as Box<dyn Read + Send>),
                size,
            },
        })
    }
}

/// The most read at once to recognise a file (a whole message, usually).
const FIRST_READ: usize = 64 * 1024;

/// A folder's files of up to this many bytes (as listed) are opened by the worker that takes
/// them ([`Task::Listed`]); larger ones by the producer, which hands out an mbox among them one
/// message at a time. An mbox this small is split by the worker, whole, into one task's items.
const SMALL_FILE: u64 = 1024 * 1024;

/// The items of `task`: `work` applied to its unit, or, for a file not opened yet, to each unit
/// the file turns out to hold (the file itself, the messages of an mbox, or why it could not be
/// read), in order. Runs on a worker thread.
fn run<T>(work: &Work<T>, task: Task) -> Vec<T> {
    match task {
        Task::Unit(unit) => work(unit),
        Task::Listed { input, path, size } => {
            // A producer of its own for this one file: the same code as for the files the
            // shared one opens.
            let mut producer = Producer::new(Vec::new());
            let first = producer.open_file(input, path, Some(size));
            first
                .into_iter()
                .chain(std::iter::from_fn(|| producer.next_unit()))
                .flat_map(|unit| work(unit))
                .collect()
        }
    }
}

/// Read from `reader` until at least 5 bytes (enough to tell an mbox) or its end, in reads of
/// at most `max` bytes in all. Returns the bytes and whether the end was reached (a read that
/// gave nothing).
fn read_head(reader: &mut impl Read, max: usize) -> io::Result<(Vec<u8>, bool)> {
    let mut head = vec![0; max.max(5)];
    let mut len = 0;
    let mut ended = false;
    while len < 5 {
        match reader.read(&mut head[len..]) {
            Ok(0) => {
                ended = true;
                break;
            }
            Ok(n) => len += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    head.truncate(len);
    Ok((head, ended))
}

/// What a worker does with a unit: the items it holds, in order.
pub(super) type Work<T> = Arc<dyn Fn(Unit) -> Vec<T> + Send + Sync>;

/// Items made from units on worker threads, yielded in input order.
pub struct Stream<T> {
    state: State<T>,
}

enum State<T> {
    /// Nothing started yet: no thread, no file open.
    Idle(Producer, Work<T>),
    Running(Pool<T>),
    Done,
}

impl<T: Send + 'static> Stream<T> {
    pub(super) fn new(producer: Producer, work: Work<T>) -> Self {
        Stream {
            state: State::Idle(producer, work),
        }
    }
}

impl<T: Send + 'static> Iterator for Stream<T> {
    type Item = T;

    fn next(&mut self) -> Option<T> {
        loop {
            match &mut self.state {
                State::Idle(..) => {
                    let State::Idle(producer, work) =
                        std::mem::replace(&mut self.state, State::Done)
                    else {
                        unreachable!()
                    };
                    self.state = State::Running(Pool::start(producer, work));
                }
                State::Running(pool) => {
                    let item = pool.next();
                    if item.is_none() {
                        self.state = State::Done;
                    }
                    return item;
                }
                State::Done => return None,
            }
        }
    }
}

/// The worker threads and what they share.
struct Pool<T> {
    shared: Arc<Shared<T>>,
    /// Items of the units taken from the window and not yet yielded, in order.
    taken: VecDeque<T>,
    /// No worker thread could be started: units are read and parsed on the caller's thread.
    inline: bool,
}

struct Shared<T> {
    producer: Mutex<Producer>,
    work: Work<T>,
    window: Mutex<Window<T>>,
    /// Results are ready for the stream (see [`Window::ready_for_stream`]), the producer ran
    /// out, or a worker died.
    filled: Condvar,
    /// Results were taken, or the stream was dropped.
    room: Condvar,
}

/// The units handed out and not yet taken: a slot each, in order.
struct Window<T> {
    /// Each unit's items once made (`None` while a worker is on it) and its bytes.
    slots: VecDeque<(Option<Vec<T>>, u64)>,
    /// Index of the first slot since the start (the units handed out before it were taken).
    first: usize,
    /// Bytes of the units in the window and of those the stream holds.
    bytes: u64,
    /// Units the stream took and has not yielded all of yet: they still count against the
    /// window, so what is read ahead stays bounded.
    held: usize,
    held_bytes: u64,
    /// Slots at the front whose items are made.
    ready: usize,
    /// The producer has no more units.
    exhausted: bool,
    /// The stream was dropped: workers stop.
    stopped: bool,
    /// A worker panicked.
    panicked: bool,
    /// The stream is waiting on `filled`; workers waiting on `room`. A condition variable is
    /// signalled only when somebody waits on it (each signal is a system call).
    stream_waiting: bool,
    workers_waiting: usize,
}

/// Results the stream is woken for at once, rather than one by one.
const BATCH: usize = 16;

impl<T> Window<T> {
    /// Is it worth waking the stream: a batch of results ready at the front, or every unit
    /// handed out is ready (nothing more will come soon: the last units, or input that arrives
    /// slowly), or the end?
    fn ready_for_stream(&self) -> bool {
        self.ready >= BATCH
            || (self.ready > 0 && self.ready == self.slots.len())
            || (self.exhausted && self.ready == self.slots.len())
            || self.panicked
    }

    fn has_room(&self) -> bool {
        let units = self.slots.len() + self.held;
        units == 0 || (units < WINDOW && self.bytes < BUDGET)
    }
}

fn lock<X>(m: &Mutex<X>) -> MutexGuard<'_, X> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn wait<'a, X>(c: &Condvar, guard: MutexGuard<'a, X>) -> MutexGuard<'a, X> {
    c.wait(guard)
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl<T> Shared<T> {
    /// Hand out the next task (the caller holds the producer): its slot's index and the task,
    /// or `None` when there are no more.
    fn draw(&self, producer: &mut Producer) -> Option<(usize, Task)> {
        let task = producer.next_task(true);
        let mut w = lock(&self.window);
        let Some(task) = task else {
            w.exhausted = true;
            self.filled.notify_all();
            self.room.notify_all();
            return None;
        };
        let bytes = task.bytes();
        w.slots.push_back((None, bytes));
        w.bytes += bytes;
        Some((w.first + w.slots.len() - 1, task))
    }

    /// Put the items a worker made in their slots (`made`: each slot's index and items), all
    /// under one lock, and wake the stream if that makes a batch ready.
    fn fill(&self, made: &mut Vec<(usize, Vec<T>)>) {
        let mut w = lock(&self.window);
        for (index, items) in made.drain(..) {
            // Slots before this one may have been taken meanwhile, never this one.
            let at = index - w.first;
            w.slots[at].0 = Some(items);
        }
        while w.ready < w.slots.len() && w.slots[w.ready].0.is_some() {
            w.ready += 1;
        }
        if w.stream_waiting && w.ready_for_stream() {
            self.filled.notify_one();
        }
    }
}

impl<T: Send + 'static> Pool<T> {
    fn start(producer: Producer, work: Work<T>) -> Self {
        let shared = Arc::new(Shared {
            producer: Mutex::new(producer),
            work,
            window: Mutex::new(Window {
                slots: VecDeque::new(),
                first: 0,
                bytes: 0,
                held: 0,
                held_bytes: 0,
                ready: 0,
                exhausted: false,
                stopped: false,
                panicked: false,
                stream_waiting: false,
                workers_waiting: 0,
            }),
            filled: Condvar::new(),
            room: Condvar::new(),
        });
        let workers = std::thread::available_parallelism()
            .map_or(1, |n| n.get())
            .clamp(1, MAX_WORKERS);
        let mut spawned = 0;
        for i in 0..workers {
            let shared = shared.clone();
            let thread = std::thread::Builder::new()
                .name(format!("intake-{i}"))
                .spawn(move || worker(&shared));
            spawned += usize::from(thread.is_ok());
        }
        Pool {
            shared,
            taken: VecDeque::new(),
            inline: spawned == 0,
        }
    }

    fn next(&mut self) -> Option<T> {
        loop {
            if let Some(item) = self.taken.pop_front() {
                return Some(item);
            }
            if self.inline {
                // No thread could be started: one unit at a time on this one.
                let unit = lock(&self.shared.producer).next_unit()?;
                self.taken.extend((self.shared.work)(unit));
                continue;
            }
            let mut w = lock(&self.shared.window);
            // What was taken last time is all yielded: it no longer counts.
            if w.held > 0 {
                w.bytes -= w.held_bytes;
                (w.held, w.held_bytes) = (0, 0);
                if w.workers_waiting > 0 {
                    self.shared.room.notify_all();
                }
            }
            while !w.ready_for_stream() {
                w.stream_waiting = true;
                w = wait(&self.shared.filled, w);
                w.stream_waiting = false;
            }
            if w.panicked {
                // Never a silently shortened stream.
                drop(w);
                panic!("an intake worker thread panicked");
            }
            if w.ready == 0 {
                // Exhausted, and everything taken.
                return None;
            }
            // Every ready result at once.
            for _ in 0..w.ready {
                if let Some((items, bytes)) = w.slots.pop_front() {
                    w.first += 1;
                    w.held += 1;
                    w.held_bytes += bytes;
                    self.taken.extend(items.unwrap_or_default());
                }
            }
            w.ready = 0;
        }
    }
}

impl<T> Drop for Pool<T> {
    fn drop(&mut self) {
        // Workers finish what they hold and stop; none is waited for (one may be blocked on
        // standard input).
        lock(&self.shared.window).stopped = true;
        self.shared.room.notify_all();
    }
}

/// Marks the pool as broken if the worker holding it unwinds.
struct PanicGuard<'a, T>(&'a Shared<T>);

impl<T> Drop for PanicGuard<'_, T> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            lock(&self.0.window).panicked = true;
            self.0.filled.notify_all();
        }
    }
}

/// Units a worker takes at once when they are quick to hand out (the files of a folder, the
/// messages of an mbox file; not standard input, whose next message may be slow to come): fewer
/// turns at the producer and at the window, so the workers seldom wait for each other there.
const DRAW: usize = 8;

fn worker<T>(shared: &Shared<T>) {
    let _guard = PanicGuard(shared);
    let mut drawn: Vec<(usize, Task)> = Vec::with_capacity(DRAW);
    let mut made: Vec<(usize, Vec<T>)> = Vec::with_capacity(DRAW);
    loop {
        // Wait for room without holding the producer (never hold one lock while waiting for
        // another to be given up).
        {
            let mut w = lock(&shared.window);
            loop {
                if w.stopped || w.exhausted {
                    return;
                }
                if w.has_room() {
                    break;
                }
                w.workers_waiting += 1;
                w = wait(&shared.room, w);
                w.workers_waiting -= 1;
            }
        }
        // Take the next units, in order, while there is room for them.
        let mut producer = lock(&shared.producer);
        loop {
            {
                let w = lock(&shared.window);
                if w.stopped {
                    return;
                }
                if w.exhausted || !w.has_room() {
                    break;
                }
            }
            let Some(next) = shared.draw(&mut producer) else {
                break;
            };
            drawn.push(next);
            if drawn.len() == DRAW || !producer.next_is_quick() {
                break;
            }
        }
        drop(producer);
        // Read and parse them all, then put their items in place at once.
        for (index, task) in drawn.drain(..) {
            made.push((index, run(&shared.work, task)));
        }
        shared.fill(&mut made);
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU64, Ordering};

    use super::*;

    /// An mbox of `count` messages of about 8 KiB, made as it is read, that counts what has been
    /// read from it.
    struct Generated {
        next: usize,
        count: usize,
        pending: Vec<u8>,
        read: Arc<AtomicU64>,
    }

    const MESSAGE: usize = 8 * 1024;
    const FROM_LINE: &[u8] = b"From MAILER-DAEMON Mon Nov 30 06:00:00 2026\n";
    /// Bytes of one message in the mbox: its `From ` line, itself, the blank line after it.
    const IN_MBOX: usize = FROM_LINE.len() + MESSAGE + 1;

    fn message(i: usize) -> Vec<u8> {
        let mut m = format!("Subject: message {i}\n\n").into_bytes();
        m.resize(MESSAGE - 1, b'z');
        m.push(b'\n');
        m
    }

    impl Read for Generated {
        fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
            if self.pending.is_empty() && self.next < self.count {
                self.pending = FROM_LINE.to_vec();
                self.pending.extend(message(self.next));
                self.pending.push(b'\n');
                self.next += 1;
            }
            let n = out.len().min(self.pending.len());
            out[..n].copy_from_slice(&self.pending[..n]);
            self.pending.drain(..n);
            self.read.fetch_add(n as u64, Ordering::SeqCst);
            Ok(n)
        }
    }

    fn generated(count: usize) -> (Producer, Arc<AtomicU64>) {
        let read = Arc::new(AtomicU64::new(0));
        let input = Generated {
            next: 0,
            count,
            pending: Vec::new(),
            read: read.clone(),
        };
        let producer = Producer::new(vec![Entry::Reader {
            input: 0,
            path: PathBuf::from("-"),
            origin: "-".into(),
            reader: Box::new(BufReader::with_capacity(READ_BUFFER, input)),
        }]);
        (producer, read)
    }

    /// Each unit's origin and first line, made on the workers.
    fn describe(unit: Unit) -> Vec<String> {
        match unit.kind {
            UnitKind::Message { origin, raw } => {
                let first = raw.split(|&b| b == b'\n').next().unwrap_or_default();
                vec![format!("{origin} {}", String::from_utf8_lossy(first))]
            }
            _ => vec!["not a message".into()],
        }
    }

    #[test]
    fn items_come_in_input_order_and_the_input_is_read_only_a_window_ahead() {
        // 3,000 messages, 24 MiB: more than the budget and far more than the window.
        let count = 3000;
        let (producer, read) = generated(count);
        let stream = Stream::new(producer, Arc::new(describe));
        let mut seen = 0usize;
        for item in stream {
            assert_eq!(item, format!("-:{} Subject: message {seen}", seen + 1));
            seen += 1;
            // Read so far: the messages taken, the window ahead of them, one read buffer.
            let ahead = read.load(Ordering::SeqCst) as i64 - (seen * IN_MBOX) as i64;
            assert!(
                ahead <= ((WINDOW + 1) * IN_MBOX + READ_BUFFER) as i64,
                "message {seen}: read {ahead} bytes ahead"
            );
            if seen.is_multiple_of(500) {
                // A slow reader: the workers wait for room instead of reading on.
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
        }
        assert_eq!(seen, count);
    }

    #[test]
    fn a_stream_dropped_early_stops_its_workers() {
        let (producer, read) = generated(100_000);
        let mut stream = Stream::new(producer, Arc::new(describe));
        assert!(stream.next().is_some());
        drop(stream);
        std::thread::sleep(std::time::Duration::from_millis(50));
        let after_drop = read.load(Ordering::SeqCst);
        std::thread::sleep(std::time::Duration::from_millis(50));
        assert_eq!(read.load(Ordering::SeqCst), after_drop, "still reading");
        assert!(after_drop < 4 << 20, "{after_drop} bytes read");
    }

    /// Each unit's origin (a message's first line after it), or why it could not be read.
    fn name(unit: Unit) -> Vec<String> {
        match unit.kind {
            UnitKind::Message { origin, raw } => {
                let first = raw.split(|&b| b == b'\n').next().unwrap_or_default();
                vec![format!("{origin} {}", String::from_utf8_lossy(first))]
            }
            UnitKind::Whole { origin, .. } => vec![origin],
            UnitKind::Failed(e) => vec![format!("failed: {e}")],
            _ => vec!["other".into()],
        }
    }

    #[test]
    fn small_files_opened_by_the_workers_keep_their_place_among_large_ones() {
        let tmp = tempfile::tempdir().unwrap();
        let file = |name: &str, bytes: &[u8]| {
            let path = tmp.path().join(name);
            std::fs::write(&path, bytes).unwrap();
            let size = bytes.len() as u64;
            (path, size)
        };
        // A small message, a small mbox of two (split by the worker that opens it), an mbox over
        // SMALL_FILE (split by the producer, a message at a time), a file gone since the listing,
        // and a last small message: 100 times over, more than the window holds.
        let small_mbox = file(
            "b.mbox",
            b"From a\nSubject: one\n\nx\n\nFrom b\nSubject: two\n\ny\n",
        );
        let mut large = Vec::new();
        let mut count = 0;
        while (large.len() as u64) <= SMALL_FILE {
            count += 1;
            large.extend_from_slice(format!("From c\nSubject: big {count}\n\n").as_bytes());
            large.extend_from_slice(&[b'z'; 8000]);
            large.extend_from_slice(b"\n\n");
        }
        let large_mbox = file("c.mbox", &large);
        let first = file("a.eml", b"Subject: first\n\nbody\n");
        let last = file("e.eml", b"Subject: last\n\nbody\n");
        let gone = tmp.path().join("d.eml");
        let entry = |(path, size): &(PathBuf, u64)| Entry::File {
            input: 0,
            path: path.clone(),
            maildir: false,
            size: *size,
        };
        let mut entries = Vec::new();
        let mut want = Vec::new();
        let shown = |p: &Path| p.display().to_string();
        for _ in 0..100 {
            entries.push(entry(&first));
            want.push(shown(&first.0));
            entries.push(entry(&small_mbox));
            want.push(format!("{}:1 Subject: one", shown(&small_mbox.0)));
            want.push(format!("{}:2 Subject: two", shown(&small_mbox.0)));
            entries.push(entry(&large_mbox));
            for n in 1..=count {
                want.push(format!("{}:{n} Subject: big {n}", shown(&large_mbox.0)));
            }
            entries.push(entry(&(gone.clone(), 10)));
            want.push(format!(
                "failed: cannot read {}: No such file or directory (os error 2)",
                gone.display()
            ));
            entries.push(entry(&last));
            want.push(shown(&last.0));
        }
        let got: Vec<String> = Stream::new(Producer::new(entries), Arc::new(name)).collect();
        assert_eq!(got.len(), want.len());
        for (g, w) in got.iter().zip(&want) {
            assert_eq!(g, w);
        }
    }

    #[test]
    fn a_worker_that_panics_fails_the_stream_instead_of_hanging_it() {
        let (producer, _) = generated(50);
        let work = |unit: Unit| {
            let UnitKind::Message { origin, .. } = &unit.kind else {
                unreachable!()
            };
            assert_ne!(origin, "-:20", "a bug in a parser");
            describe(unit)
        };
        let stream = Stream::new(producer, Arc::new(work));
        let taken = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| stream.count()));
        assert!(taken.is_err());
    }
}
