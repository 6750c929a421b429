//! Reading a process's CPU time and memory from Linux `/proc`: `stat` (utime, stime in clock
//! ticks, all threads) and `status` (`VmRSS`, `VmHWM` in KiB).
//!
//! The `parse_*` functions are pure (text in, values out); `read_*` do the file I/O.

use std::io;

/// Which process to read: another one by id, or this one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Proc {
    Pid(u32),
    Myself,
}

impl Proc {
    fn path(self, file: &str) -> String {
        match self {
            Proc::Pid(pid) => format!("/proc/{pid}/{file}"),
            Proc::Myself => format!("/proc/self/{file}"),
        }
    }
}

/// CPU time used by a process so far, in clock ticks (`sysconf(_SC_CLK_TCK)` per second).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CpuTicks {
    pub user: u64,
    pub system: u64,
}

impl CpuTicks {
    /// Ticks used between `earlier` and `self` (saturating, so a restarted pid gives 0).
    pub fn since(self, earlier: CpuTicks) -> CpuTicks {
        CpuTicks {
            user: self.user.saturating_sub(earlier.user),
            system: self.system.saturating_sub(earlier.system),
        }
    }
}

/// Parses utime and stime (fields 14 and 15) from the text of `/proc/PID/stat`.
///
/// Field 2 is the command name in parentheses and may itself contain spaces and `)`, so the
/// fields are counted from the last `)`.
pub fn parse_stat_cpu(stat: &str) -> Option<CpuTicks> {
    let after_comm = &stat[stat.rfind(')')? + 1..];
    // after_comm starts at field 3 (state): utime is field 14 → index 11.
    let mut fields = after_comm.split_ascii_whitespace().skip(11);
    let user = fields.next()?.parse().ok()?;
    let system = fields.next()?.parse().ok()?;
    Some(CpuTicks { user, system })
}

/// Parses a `Key:   1234 kB` line of `/proc/PID/status`, returning the KiB value.
pub fn parse_status_kib(status: &str, key: &str) -> Option<u64> {
    status.lines().find_map(|line| {
        let value = line.strip_prefix(key)?.strip_prefix(':')?;
        let mut parts = value.split_ascii_whitespace();
        let n = parts.next()?.parse().ok()?;
        match parts.next() {
            Some("kB") | None => Some(n),
            Some(_) => None,
        }
    })
}

/// Reads the CPU time used so far by `proc`.
pub fn read_cpu(proc: Proc) -> io::Result<CpuTicks> {
    let text = std::fs::read_to_string(proc.path("stat"))?;
    parse_stat_cpu(&text).ok_or_else(|| io::Error::other("unparsable /proc stat"))
}

/// Reads one KiB value (`VmRSS`, `VmHWM`, ...) of `proc`'s status.
pub fn read_status_kib(proc: Proc, key: &str) -> io::Result<u64> {
    let text = std::fs::read_to_string(proc.path("status"))?;
    parse_status_kib(&text, key)
        .ok_or_else(|| io::Error::other(format!("no {key} in /proc status")))
}

#[cfg(test)]
mod tests {
    use super::*;

    const STAT: &str = "4242 (icecast2) S 1 4242 4242 0 -1 4194560 1234 0 0 0 \
                        731 2954 0 0 20 0 5 0 123456 567890123 4321 18446744073709551615";

    #[test]
    fn stat_utime_stime() {
        assert_eq!(
            parse_stat_cpu(STAT),
            Some(CpuTicks {
                user: 731,
                system: 2954
            })
        );
    }

    #[test]
    fn stat_with_awkward_command_name() {
        let stat = STAT.replace("(icecast2)", "(a) b (c) d)");
        assert_eq!(parse_stat_cpu(&stat).map(|c| c.user), Some(731));
    }

    #[test]
    fn stat_truncated_or_garbage() {
        assert_eq!(parse_stat_cpu("12 (x) S 1 2 3"), None);
        assert_eq!(parse_stat_cpu("no parens at all"), None);
        assert_eq!(parse_stat_cpu(""), None);
    }

    #[test]
    fn ticks_since() {
        let a = CpuTicks {
            user: 10,
            system: 20,
        };
        let b = CpuTicks {
            user: 15,
            system: 26,
        };
        assert_eq!(b.since(a), CpuTicks { user: 5, system: 6 });
        assert_eq!(a.since(b), CpuTicks::default());
    }

    #[test]
    fn status_values() {
        let status = "Name:\tonair\nVmPeak:\t  99999 kB\nVmHWM:\t   20480 kB\n\
                      VmRSS:\t   10240 kB\nThreads:\t3\n";
        assert_eq!(parse_status_kib(status, "VmRSS"), Some(10240));
        assert_eq!(parse_status_kib(status, "VmHWM"), Some(20480));
        assert_eq!(parse_status_kib(status, "VmSwap"), None);
        // A key that is only a prefix of another must not match it.
        assert_eq!(parse_status_kib(status, "Vm"), None);
    }

    #[test]
    fn reads_own_process() {
        assert!(read_cpu(Proc::Myself).is_ok());
        assert!(read_status_kib(Proc::Myself, "VmRSS").unwrap() > 0);
    }
}
