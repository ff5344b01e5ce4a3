//! The control socket's mechanics: a Unix stream socket that only root may
//! use, one request per connection, bounded in size and time.
//!
//! [`ControlSocket::bind`] creates the socket file with mode 0600 (its
//! directory is created if missing), replacing a stale file left by an
//! appliance that died but never a socket another appliance still answers on.
//! [`ControlSocket::accept`] hands out one client at a time with its peer
//! credentials (`SO_PEERCRED`, which the kernel fills in at connect time and a
//! client cannot forge); [`read_request`] reads what the client sends until it
//! shuts down its side, refusing more than a limit and giving up after a
//! timeout, so that a slow or oversized client cannot hold the server. What a
//! request means is the caller's business (the `lbp` binary speaks JSON over
//! it). The file is removed when the socket is dropped.

use std::io::{self, Read};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// The largest request a client may send, in bytes.
pub const MAX_REQUEST: usize = 64 * 1024;

/// How long a client may take to send its request.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(2);

/// The bound control socket.
#[derive(Debug)]
pub struct ControlSocket {
    listener: UnixListener,
    path: PathBuf,
}

/// A connected client and who it is.
#[derive(Debug)]
pub struct Peer {
    pub stream: UnixStream,
    /// The client process's user id and process id, from the kernel.
    pub uid: u32,
    pub pid: i32,
}

/// Why a request was not read.
#[derive(Debug)]
pub enum RequestError {
    /// More than [`MAX_REQUEST`] bytes.
    TooLarge,
    /// Not all of it within [`REQUEST_TIMEOUT`].
    Timeout,
    Io(io::Error),
}

impl std::fmt::Display for RequestError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RequestError::TooLarge => {
                write!(f, "request too large (at most {MAX_REQUEST} bytes)")
            }
            RequestError::Timeout => write!(
                f,
                "request not complete within {} s",
                REQUEST_TIMEOUT.as_secs()
            ),
            RequestError::Io(e) => write!(f, "{e}"),
        }
    }
}

impl ControlSocket {
    /// Bind at `path`, mode 0600, non-blocking accepts. An existing file there
    /// is removed only if it is a socket nobody answers on.
    pub fn bind(path: &Path) -> io::Result<ControlSocket> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)?;
        }
        match std::fs::symlink_metadata(path) {
            Ok(m) if m.file_type().is_socket() => {
                if UnixStream::connect(path).is_ok() {
                    return Err(io::Error::new(
                        io::ErrorKind::AddrInUse,
                        "another appliance answers on this control socket",
                    ));
                }
                std::fs::remove_file(path)?;
            }
            Ok(_) => {
                return Err(io::Error::new(
                    io::ErrorKind::AlreadyExists,
                    "a file that is not a socket is in the way",
                ));
            }
            Err(_) => {}
        }
        let listener = UnixListener::bind(path)?;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
        listener.set_nonblocking(true)?;
        Ok(ControlSocket {
            listener,
            path: path.to_path_buf(),
        })
    }

    /// The socket's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The next waiting client, if any (never blocks). Its stream is blocking
    /// with the request timeout for reads and writes.
    pub fn accept(&self) -> io::Result<Option<Peer>> {
        let stream = match self.listener.accept() {
            Ok((s, _)) => s,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(None),
            Err(e) => return Err(e),
        };
        stream.set_nonblocking(false)?;
        stream.set_read_timeout(Some(REQUEST_TIMEOUT))?;
        stream.set_write_timeout(Some(REQUEST_TIMEOUT))?;
        let (uid, pid) = peer_cred(&stream)?;
        Ok(Some(Peer { stream, uid, pid }))
    }
}

impl Drop for ControlSocket {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// The user id and process id of the process at the other end of `s`.
pub fn peer_cred(s: &UnixStream) -> io::Result<(u32, i32)> {
    let mut cred = libc::ucred {
        pid: 0,
        uid: u32::MAX,
        gid: u32::MAX,
    };
    let mut len = size_of::<libc::ucred>() as libc::socklen_t;
    // SAFETY: `cred` is a valid ucred and `len` its size; the kernel writes at
    // most `len` bytes into it.
    let r = unsafe {
        libc::getsockopt(
            s.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_PEERCRED,
            (&raw mut cred).cast(),
            &mut len,
        )
    };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok((cred.uid, cred.pid))
}

/// Read a client's request: everything until it shuts down its writing side,
/// at most [`MAX_REQUEST`] bytes, within [`REQUEST_TIMEOUT`] in all.
pub fn read_request(s: &mut UnixStream) -> Result<Vec<u8>, RequestError> {
    let start = Instant::now();
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    loop {
        let left = REQUEST_TIMEOUT.saturating_sub(start.elapsed());
        if left.is_zero() {
            return Err(RequestError::Timeout);
        }
        s.set_read_timeout(Some(left)).map_err(RequestError::Io)?;
        match s.read(&mut chunk) {
            Ok(0) => return Ok(buf),
            Ok(n) => {
                if buf.len() + n > MAX_REQUEST {
                    return Err(RequestError::TooLarge);
                }
                buf.extend_from_slice(&chunk[..n]);
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e)
                if e.kind() == io::ErrorKind::WouldBlock || e.kind() == io::ErrorKind::TimedOut =>
            {
                return Err(RequestError::Timeout);
            }
            Err(e) => return Err(RequestError::Io(e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::net::Shutdown;

    fn socket() -> (tempfile::TempDir, ControlSocket) {
        let dir = tempfile::tempdir().unwrap();
        let s = ControlSocket::bind(&dir.path().join("sub/control.sock")).unwrap();
        (dir, s)
    }

    fn accept(s: &ControlSocket) -> Peer {
        for _ in 0..1000 {
            if let Some(p) = s.accept().unwrap() {
                return p;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        panic!("no client");
    }

    #[test]
    fn the_socket_is_private_and_names_its_peer() {
        let (_dir, s) = socket();
        let mode = std::fs::metadata(s.path()).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let mut c = UnixStream::connect(s.path()).unwrap();
        c.write_all(b"{\"cmd\":\"stats\"}").unwrap();
        c.shutdown(Shutdown::Write).unwrap();
        let mut p = accept(&s);
        // SAFETY: getuid has no preconditions.
        assert_eq!(p.uid, unsafe { libc::getuid() });
        assert_eq!(p.pid, std::process::id() as i32);
        assert_eq!(read_request(&mut p.stream).unwrap(), b"{\"cmd\":\"stats\"}");
        assert!(s.accept().unwrap().is_none(), "never blocks");
    }

    #[test]
    fn oversized_and_slow_requests_are_refused() {
        let (_dir, s) = socket();
        let path = s.path().to_path_buf();
        let writer = std::thread::spawn(move || {
            let mut c = UnixStream::connect(path).unwrap();
            // The server stops reading after the limit: ignore the broken pipe.
            let _ = c.write_all(&vec![b'x'; 1 << 20]);
        });
        let mut p = accept(&s);
        assert!(matches!(
            read_request(&mut p.stream),
            Err(RequestError::TooLarge)
        ));
        drop(p);
        writer.join().unwrap();
        // A client that sends part of a request and waits.
        let mut c = UnixStream::connect(s.path()).unwrap();
        c.write_all(b"{\"cmd\":").unwrap();
        let mut p = accept(&s);
        assert!(matches!(
            read_request(&mut p.stream),
            Err(RequestError::Timeout)
        ));
    }

    #[test]
    fn a_live_socket_is_not_taken_over_and_a_stale_one_is() {
        let (dir, s) = socket();
        let path = s.path().to_path_buf();
        assert!(ControlSocket::bind(&path).is_err(), "in use");
        // A stale socket file: bound, then its listener gone without cleanup.
        std::mem::forget(s);
        let again = ControlSocket::bind(&path);
        // The forgotten listener still answers (its fd is open): refused.
        assert!(again.is_err());
        let other = dir.path().join("stale.sock");
        drop(UnixListener::bind(&other).unwrap());
        assert!(ControlSocket::bind(&other).is_ok(), "stale file replaced");
        let file = dir.path().join("plain");
        std::fs::write(&file, b"x").unwrap();
        assert!(ControlSocket::bind(&file).is_err(), "not a socket");
    }
}
