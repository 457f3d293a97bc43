//! The store's VFS: the platform's own (`unix`), except that the WAL's writes of one transaction
//! reach the kernel as one `pwrite`.
//!
//! SQLite appends a commit to the WAL as two writes per frame (a 24-byte frame header, then the
//! page), so a `worker_create` (two or three frames) was four to seven `pwrite`s, each a full
//! trip through the filesystem's write path: most of a sequential call's system time. Here a
//! WAL file gathers contiguous writes in memory and writes them with one call when
//!
//! - the page of a *commit* frame has been written (its frame header says so: a non-zero
//!   database size), so every frame of a commit is in the file before SQLite publishes the new
//!   end of the WAL in the shared index (`walIndexWriteHdr`, after `sqlite3WalFrames` returns
//!   from its writes): readers in other processes, which read frames straight from the file,
//!   never see a frame that is not there yet, and an error (a full disk) is the commit's own
//!   error, returned by that write, before anything was published;
//! - the next write is not contiguous, the batch is larger than [`MAX_PENDING`], or SQLite does
//!   anything else with the file (read, sync, size, truncate, lock, file control, close): to
//!   every later operation the file is exactly what the writes so far made it.
//!
//! Durability is unchanged: a commit is in the kernel's page cache (what `synchronous = NORMAL`
//! promises: it survives the process, not a power loss) before `COMMIT` returns. Frames of a
//! transaction that spilled pages and then rolled back may wait for the next operation; nothing
//! refers to them (they are past the published end of the WAL). Every other file (the database,
//! its shared-memory index) is the platform VFS's own object, unwrapped.

use std::ffi::{CStr, c_char, c_int, c_void};
use std::mem::{align_of, size_of};
use std::ptr;
use std::sync::OnceLock;

use rusqlite::ffi;

/// The name the store's connections open their file with.
pub const NAME: &CStr = c"mcp-workers";

/// A batch that grows past this many bytes (a large transaction) is written at once; also the
/// most one write passes on (the platform's `xWrite` takes at most 128 KiB - 1 per call).
pub const MAX_PENDING: usize = 64 << 10;

/// Size of a WAL frame header; its bytes 4..8 are the database size, non-zero on a commit.
const FRAME_HEADER: usize = 24;

/// A WAL file: ours in front, the platform's file after it in the same allocation.
#[repr(C)]
struct WalFile {
    base: ffi::sqlite3_file,
    inner: *mut ffi::sqlite3_file,
    /// Written but not yet passed on, for the file range starting at `at`.
    pending: Vec<u8>,
    at: i64,
    /// The last write was the header of a commit frame: its page completes the commit.
    commit_next: bool,
}

/// Where the platform's file starts inside ours.
const INNER_OFFSET: usize = size_of::<WalFile>().next_multiple_of(align_of::<u64>());

/// Registers the VFS (once per process) and returns its name, or SQLite's error code.
pub fn name() -> Result<&'static CStr, c_int> {
    static REGISTERED: OnceLock<c_int> = OnceLock::new();
    // SAFETY: `sqlite3_vfs_find(NULL)` returns the default VFS, which lives as long as the
    // process; the copy made from it is leaked, as a registered VFS must outlive every
    // connection.
    let rc = *REGISTERED.get_or_init(|| unsafe {
        // Before SQLite initialises (the lookup below does): no memory statistics, which the
        // store never reads and which take a global mutex around every allocation (one of
        // SQLite's recommended options). Refused, harmlessly, if SQLite is initialised already.
        ffi::sqlite3_config(ffi::SQLITE_CONFIG_MEMSTATUS, c_int::from(false));
        let platform = ffi::sqlite3_vfs_find(ptr::null());
        if platform.is_null() {
            return ffi::SQLITE_ERROR;
        }
        let Ok(size) = c_int::try_from(INNER_OFFSET + usize::try_from((*platform).szOsFile).unwrap_or(0)) else {
            return ffi::SQLITE_ERROR;
        };
        // The platform's own functions for everything but `xOpen`; of them only its `xOpen`
        // reads `pAppData`, and ours calls it with the platform's VFS.
        let vfs = Box::leak(Box::new(ffi::sqlite3_vfs {
            szOsFile: size,
            pNext: ptr::null_mut(),
            zName: NAME.as_ptr(),
            pAppData: platform.cast::<c_void>(),
            xOpen: Some(open),
            ..*platform
        }));
        ffi::sqlite3_vfs_register(vfs, 0)
    });
    if rc == ffi::SQLITE_OK { Ok(NAME) } else { Err(rc) }
}

unsafe extern "C" fn open(
    vfs: *mut ffi::sqlite3_vfs,
    name: *const c_char,
    file: *mut ffi::sqlite3_file,
    flags: c_int,
    out_flags: *mut c_int,
) -> c_int {
    // SAFETY: SQLite hands us our VFS (whose `pAppData` is the platform's) and `szOsFile` bytes
    // at `file`, room for a `WalFile` followed by the platform's file.
    unsafe {
        let platform = (*vfs).pAppData.cast::<ffi::sqlite3_vfs>();
        let Some(platform_open) = (*platform).xOpen else { return ffi::SQLITE_ERROR };
        if flags & ffi::SQLITE_OPEN_WAL == 0 {
            return platform_open(platform, name, file, flags, out_flags);
        }
        let inner = file.cast::<u8>().add(INNER_OFFSET).cast::<ffi::sqlite3_file>();
        let rc = platform_open(platform, name, inner, flags, out_flags);
        if rc != ffi::SQLITE_OK || (*inner).pMethods.is_null() {
            // SQLite closes a file whose open failed only if `pMethods` is set: the platform's
            // file was closed by its own `xOpen`, so ours is not set.
            (*file).pMethods = ptr::null();
            return if rc == ffi::SQLITE_OK { ffi::SQLITE_CANTOPEN } else { rc };
        }
        file.cast::<WalFile>().write(WalFile {
            base: ffi::sqlite3_file { pMethods: &WAL_METHODS },
            inner,
            pending: Vec::new(),
            at: 0,
            commit_next: false,
        });
        ffi::SQLITE_OK
    }
}

/// The platform file's methods.
///
/// # Safety
/// `w.inner` is an open platform file.
unsafe fn methods(w: &WalFile) -> &ffi::sqlite3_io_methods {
    // SAFETY: an open file's `pMethods` points at the platform's static method table.
    unsafe { &*(*w.inner).pMethods }
}

/// Passes the pending bytes on (one write per [`MAX_PENDING`] bytes), whatever happens
/// forgetting them.
///
/// # Safety
/// `w.inner` is an open platform file.
unsafe fn flush(w: &mut WalFile) -> c_int {
    w.commit_next = false;
    // SAFETY: per this function's contract.
    let Some(write) = (unsafe { methods(w) }).xWrite else { return ffi::SQLITE_IOERR_WRITE };
    let mut rc = ffi::SQLITE_OK;
    let mut at = w.at;
    for chunk in w.pending.chunks(MAX_PENDING) {
        let (Ok(len), Ok(step)) = (c_int::try_from(chunk.len()), i64::try_from(chunk.len())) else {
            rc = ffi::SQLITE_IOERR_WRITE;
            break;
        };
        // SAFETY: `chunk` is `len` readable bytes; `w.inner` is open.
        rc = unsafe { write(w.inner, chunk.as_ptr().cast::<c_void>(), len, at) };
        #[cfg(test)]
        tests::WRITES.with(|n| n.set(n.get() + 1));
        if rc != ffi::SQLITE_OK {
            break;
        }
        at += step;
    }
    w.pending.clear();
    rc
}

/// Our file behind SQLite's pointer, with its pending bytes passed on.
///
/// # Safety
/// `file` was opened by [`open`] as a WAL file and is not closed.
unsafe fn flushed<'a>(file: *mut ffi::sqlite3_file) -> Result<&'a mut WalFile, c_int> {
    // SAFETY: per this function's contract.
    let w = unsafe { &mut *file.cast::<WalFile>() };
    // SAFETY: `w` is open.
    match unsafe { flush(w) } {
        ffi::SQLITE_OK => Ok(w),
        rc => Err(rc),
    }
}

unsafe extern "C" fn wal_write(file: *mut ffi::sqlite3_file, buf: *const c_void, amt: c_int, offset: i64) -> c_int {
    // SAFETY: SQLite calls with a WAL file we opened and `amt` readable bytes at `buf`.
    unsafe {
        let w = &mut *file.cast::<WalFile>();
        let Ok(len) = usize::try_from(amt) else { return ffi::SQLITE_IOERR_WRITE };
        let bytes = std::slice::from_raw_parts(buf.cast::<u8>(), len);
        // Whatever else happens, the write after a commit frame's header is passed on at once.
        let completes_commit = std::mem::take(&mut w.commit_next);
        let end = i64::try_from(w.pending.len()).ok().and_then(|n| w.at.checked_add(n));
        if !w.pending.is_empty() && end != Some(offset) {
            let rc = flush(w);
            if rc != ffi::SQLITE_OK {
                return rc;
            }
        }
        if w.pending.is_empty() {
            w.at = offset;
        }
        w.pending.extend_from_slice(bytes);
        if len == FRAME_HEADER && bytes[4..8] != [0; 4] {
            w.commit_next = true;
        } else if completes_commit || w.pending.len() >= MAX_PENDING {
            return flush(w);
        }
        ffi::SQLITE_OK
    }
}

unsafe extern "C" fn wal_close(file: *mut ffi::sqlite3_file) -> c_int {
    // SAFETY: SQLite closes a file we opened, once; afterwards it does not touch it.
    unsafe {
        let w = &mut *file.cast::<WalFile>();
        let flushed = flush(w);
        let closed = methods(w).xClose.map_or(ffi::SQLITE_OK, |close| close(w.inner));
        ptr::drop_in_place(&raw mut w.pending);
        if flushed == ffi::SQLITE_OK { closed } else { flushed }
    }
}

/// The WAL methods that pass on the pending bytes first, then call the platform's method.
macro_rules! after_flush {
    ($name:ident, $method:ident, ($($arg:ident: $ty:ty),*), $missing:expr) => {
        unsafe extern "C" fn $name(file: *mut ffi::sqlite3_file $(, $arg: $ty)*) -> c_int {
            // SAFETY: SQLite calls with a WAL file we opened.
            unsafe {
                match flushed(file) {
                    Ok(w) => match methods(w).$method {
                        Some(f) => f(w.inner $(, $arg)*),
                        None => $missing,
                    },
                    Err(rc) => rc,
                }
            }
        }
    };
}

after_flush!(wal_read, xRead, (buf: *mut c_void, amt: c_int, offset: i64), ffi::SQLITE_IOERR_READ);
after_flush!(wal_truncate, xTruncate, (size: i64), ffi::SQLITE_IOERR_TRUNCATE);
after_flush!(wal_sync, xSync, (flags: c_int), ffi::SQLITE_IOERR_FSYNC);
after_flush!(wal_file_size, xFileSize, (size: *mut i64), ffi::SQLITE_IOERR_FSTAT);
after_flush!(wal_lock, xLock, (level: c_int), ffi::SQLITE_OK);
after_flush!(wal_unlock, xUnlock, (level: c_int), ffi::SQLITE_OK);
after_flush!(wal_check_reserved, xCheckReservedLock, (out: *mut c_int), ffi::SQLITE_OK);
after_flush!(wal_file_control, xFileControl, (op: c_int, arg: *mut c_void), ffi::SQLITE_NOTFOUND);
after_flush!(wal_shm_map, xShmMap, (page: c_int, size: c_int, extend: c_int, out: *mut *mut c_void), ffi::SQLITE_IOERR_SHMMAP);
after_flush!(wal_shm_lock, xShmLock, (offset: c_int, n: c_int, flags: c_int), ffi::SQLITE_IOERR_SHMLOCK);
after_flush!(wal_shm_unmap, xShmUnmap, (delete: c_int), ffi::SQLITE_OK);
after_flush!(wal_fetch, xFetch, (offset: i64, amt: c_int, out: *mut *mut c_void), {
    // No mapping: SQLite reads instead (`out` is where to write the mapping's address).
    *out = ptr::null_mut();
    ffi::SQLITE_OK
});
after_flush!(wal_unfetch, xUnfetch, (offset: i64, page: *mut c_void), ffi::SQLITE_OK);

unsafe extern "C" fn wal_sector_size(file: *mut ffi::sqlite3_file) -> c_int {
    // SAFETY: SQLite calls with a WAL file we opened.
    unsafe {
        let w = &*file.cast::<WalFile>();
        methods(w).xSectorSize.map_or(4096, |f| f(w.inner))
    }
}

unsafe extern "C" fn wal_device_characteristics(file: *mut ffi::sqlite3_file) -> c_int {
    // SAFETY: SQLite calls with a WAL file we opened.
    unsafe {
        let w = &*file.cast::<WalFile>();
        methods(w).xDeviceCharacteristics.map_or(0, |f| f(w.inner))
    }
}

unsafe extern "C" fn wal_shm_barrier(file: *mut ffi::sqlite3_file) {
    // SAFETY: SQLite calls with a WAL file we opened.
    unsafe {
        if let Ok(w) = flushed(file)
            && let Some(f) = methods(w).xShmBarrier
        {
            f(w.inner);
        }
    }
}

static WAL_METHODS: ffi::sqlite3_io_methods = ffi::sqlite3_io_methods {
    iVersion: 3,
    xClose: Some(wal_close),
    xRead: Some(wal_read),
    xWrite: Some(wal_write),
    xTruncate: Some(wal_truncate),
    xSync: Some(wal_sync),
    xFileSize: Some(wal_file_size),
    xLock: Some(wal_lock),
    xUnlock: Some(wal_unlock),
    xCheckReservedLock: Some(wal_check_reserved),
    xFileControl: Some(wal_file_control),
    xSectorSize: Some(wal_sector_size),
    xDeviceCharacteristics: Some(wal_device_characteristics),
    xShmMap: Some(wal_shm_map),
    xShmLock: Some(wal_shm_lock),
    xShmBarrier: Some(wal_shm_barrier),
    xShmUnmap: Some(wal_shm_unmap),
    xFetch: Some(wal_fetch),
    xUnfetch: Some(wal_unfetch),
};

#[cfg(test)]
mod tests {
    use std::cell::Cell;
    use std::path::Path;

    use rusqlite::{Connection, OpenFlags, params};

    thread_local! {
        /// Writes passed on to the platform's WAL file, on this thread.
        pub static WRITES: Cell<u64> = const { Cell::new(0) };
    }

    fn writes() -> u64 {
        WRITES.with(Cell::get)
    }

    fn ours(path: &Path) -> Connection {
        let conn = Connection::open_with_flags_and_vfs(path, OpenFlags::default(), super::name().unwrap()).unwrap();
        conn.pragma_update(None, "journal_mode", "WAL").unwrap();
        conn.pragma_update(None, "synchronous", "NORMAL").unwrap();
        conn
    }

    fn plain(path: &Path) -> Connection {
        let conn = Connection::open(path).unwrap();
        conn.pragma_update(None, "journal_mode", "WAL").unwrap();
        conn
    }

    fn rows(conn: &Connection) -> Vec<(i64, String)> {
        let mut stmt = conn.prepare("SELECT k, v FROM t ORDER BY k").unwrap();
        stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?))).unwrap().collect::<Result<_, _>>().unwrap()
    }

    fn integrity(conn: &Connection) -> String {
        conn.query_row("PRAGMA integrity_check", [], |r| r.get(0)).unwrap()
    }

    #[test]
    fn a_commit_of_several_frames_is_one_write() {
        let dir = tempfile::tempdir().unwrap();
        let conn = ours(&dir.path().join("db"));
        conn.execute_batch("CREATE TABLE t (k INTEGER PRIMARY KEY, v TEXT); CREATE INDEX t_v ON t (v);").unwrap();
        for k in 0..3 {
            let before = writes();
            conn.execute("INSERT INTO t VALUES (?1, ?2)", params![k, format!("row {k}")]).unwrap();
            // The table's page and the index's page (and page 1 when the file grows): two
            // writes each through SQLite's WAL code, one here.
            assert_eq!(writes() - before, 1, "commit {k}");
        }
    }

    #[test]
    fn every_commit_is_in_the_file_for_a_connection_that_does_not_use_the_vfs() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db");
        let writer = ours(&path);
        writer.execute_batch("CREATE TABLE t (k INTEGER PRIMARY KEY, v TEXT)").unwrap();
        let reader = plain(&path);
        let mut expected = Vec::new();
        for k in 0..200_i64 {
            // Rows of a page or more, so commits span several frames and pages overflow.
            let v = format!("{k}:{}", "x".repeat(usize::try_from(k * 37 % 5000).unwrap()));
            writer.execute("INSERT INTO t VALUES (?1, ?2)", params![k, v]).unwrap();
            expected.push((k, v));
            if k % 50 == 49 {
                // The WAL starts over from its beginning (a new header) after a checkpoint.
                reader.query_row("PRAGMA wal_checkpoint(RESTART)", [], |_| Ok(())).unwrap();
            }
            if k % 7 == 0 {
                // The other connection writes too: ours must take up after its frames.
                reader.execute("UPDATE t SET v = v || '!' WHERE k = ?1", params![k]).unwrap();
                expected.last_mut().unwrap().1.push('!');
            }
            assert_eq!(rows(&reader).last(), expected.last(), "commit {k} seen by the other connection");
        }
        assert_eq!(rows(&reader), expected);
        assert_eq!(integrity(&reader), "ok");
    }

    #[test]
    fn a_transaction_larger_than_the_batch_and_one_rolled_back_after_spilling_leave_the_file_right() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db");
        let writer = ours(&path);
        // A cache of a few pages: a large transaction spills frames before its commit.
        writer.execute_batch("PRAGMA cache_size = 4; CREATE TABLE t (k INTEGER PRIMARY KEY, v TEXT)").unwrap();
        let big = "y".repeat(3 * super::MAX_PENDING);
        writer.execute("INSERT INTO t VALUES (1, ?1)", params![big]).unwrap();
        writer.execute_batch("BEGIN").unwrap();
        for k in 10..200 {
            writer.execute("INSERT INTO t VALUES (?1, ?2)", params![k, "z".repeat(3000)]).unwrap();
        }
        writer.execute_batch("ROLLBACK").unwrap();
        writer.execute("INSERT INTO t VALUES (2, 'after')", []).unwrap();
        let reader = plain(&path);
        assert_eq!(rows(&reader), vec![(1, big), (2, "after".to_owned())]);
        assert_eq!(integrity(&reader), "ok");
        drop(writer);
        // Reopened through the VFS, after the last connection of ours checkpointed and closed.
        drop(reader);
        assert_eq!(rows(&ours(&path)).len(), 2);
    }
}
