//! What the load tool needs from libc about its own host: the open-file limit (raised so one
//! process can hold tens of thousands of sockets), the clock-tick rate that `/proc/PID/stat`
//! CPU times are counted in, and a socket option std and tokio do not expose
//! (`SO_RCVLOWAT`).
//!
//! All of the crate's `unsafe` lives here, one libc call per block.

use std::io;
use std::os::fd::AsRawFd;

/// The open-file limit before and after [`raise_nofile_limit`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NofileLimit {
    pub before: u64,
    pub after: u64,
}

/// Raises the soft `RLIMIT_NOFILE` to the hard limit.
pub fn raise_nofile_limit() -> io::Result<NofileLimit> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes one `rlimit` through a pointer to a live, aligned local and
    // does not keep the pointer.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return Err(io::Error::last_os_error());
    }
    let before = limit.rlim_cur;
    if before < limit.rlim_max {
        let raised = libc::rlimit {
            rlim_cur: limit.rlim_max,
            rlim_max: limit.rlim_max,
        };
        // SAFETY: setrlimit only reads the `rlimit` behind a pointer to a live local.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(NofileLimit {
        before,
        after: limit.rlim_max.max(before),
    })
}

/// Sets `SO_RCVLOWAT`: readiness is reported only once `bytes` are queued (or on EOF/error).
pub fn set_recv_low_watermark(socket: &impl AsRawFd, bytes: u32) -> io::Result<()> {
    let value = libc::c_int::try_from(bytes).unwrap_or(libc::c_int::MAX);
    // SAFETY: the fd is open for the duration of the call (borrowed from a live socket);
    // setsockopt reads exactly `size_of::<c_int>()` bytes from a pointer to a live local.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVLOWAT,
            std::ptr::from_ref(&value).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Clock ticks per second for `/proc` CPU times (`sysconf(_SC_CLK_TCK)`, 100 on Linux).
pub fn clock_ticks_per_second() -> u64 {
    // SAFETY: sysconf takes an integer name and touches no memory of ours.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    u64::try_from(ticks).ok().filter(|&t| t > 0).unwrap_or(100)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limit_is_raised_to_at_least_what_it_was() {
        let limit = raise_nofile_limit().unwrap();
        assert!(limit.after >= limit.before);
    }

    #[test]
    fn low_watermark_on_a_socket() {
        let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        set_recv_low_watermark(&socket, 4096).unwrap();
    }

    #[test]
    fn clock_ticks_are_positive() {
        assert!(clock_ticks_per_second() > 0);
    }
}
