//! What the benchmark reads from Linux's `/proc`: a process's CPU time (`/proc/<pid>/stat`) and
//! peak resident memory (`/proc/<pid>/status`), the whole machine's busy time (`/proc/stat`) and
//! the clock-tick unit of both (`AT_CLKTCK` from `/proc/self/auxv`). Parsers are pure.

/// `utime + stime` of a `/proc/<pid>/stat` line, in clock ticks. The command name (field 2) is
/// in parentheses and may hold spaces and parentheses itself: fields are counted after the last
/// `)`.
pub fn parse_pid_stat_ticks(stat: &str) -> Option<u64> {
    let (_, rest) = stat.rsplit_once(')')?;
    // After ")": field 3 (state) is the first; utime and stime are fields 14 and 15.
    let mut fields = rest.split_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime + stime)
}

/// `VmHWM` (peak resident set size) of a `/proc/<pid>/status`, in KiB.
pub fn parse_vm_hwm_kib(status: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
}

/// (busy, total) clock ticks of every CPU together, from the `cpu` line of `/proc/stat`: total
/// is user + nice + system + idle + iowait + irq + softirq + steal (guest time is already in
/// user and nice), busy is total minus idle and iowait.
pub fn parse_machine_ticks(stat: &str) -> Option<(u64, u64)> {
    let line = stat.lines().find(|l| l.starts_with("cpu "))?;
    let v: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .take(8)
        .map(|f| f.parse().ok())
        .collect::<Option<_>>()?;
    if v.len() < 5 {
        return None;
    }
    let total: u64 = v.iter().sum();
    let idle = v[3] + v[4];
    Some((total - idle, total))
}

/// `AT_CLKTCK` (type 17) of an auxiliary vector as `/proc/self/auxv` holds it: native-endian
/// pairs of machine words, ended by `AT_NULL`.
pub fn parse_auxv_clk_tck(auxv: &[u8]) -> Option<u64> {
    const AT_CLKTCK: u64 = 17;
    const W: usize = std::mem::size_of::<usize>();
    let word = |b: &[u8]| -> u64 {
        let mut a = [0u8; W];
        a.copy_from_slice(b);
        usize::from_ne_bytes(a) as u64
    };
    for pair in auxv.chunks_exact(2 * W) {
        let (key, value) = (word(&pair[..W]), word(&pair[W..]));
        match key {
            0 => return None,
            AT_CLKTCK if value > 0 => return Some(value),
            _ => {}
        }
    }
    None
}

/// Clock ticks per second of `/proc`'s CPU times (`USER_HZ`; 100 on every mainstream Linux).
pub fn clk_tck() -> u64 {
    std::fs::read("/proc/self/auxv")
        .ok()
        .and_then(|a| parse_auxv_clk_tck(&a))
        .unwrap_or(100)
}

/// A process's CPU time so far, in clock ticks.
pub fn process_ticks(pid: u32) -> std::io::Result<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    parse_pid_stat_ticks(&s).ok_or_else(|| unreadable("stat", pid))
}

/// A process's peak resident set size so far, in KiB.
pub fn peak_rss_kib(pid: u32) -> std::io::Result<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    parse_vm_hwm_kib(&s).ok_or_else(|| unreadable("status", pid))
}

/// (busy, total) ticks of the whole machine so far.
pub fn machine_ticks() -> std::io::Result<(u64, u64)> {
    let s = std::fs::read_to_string("/proc/stat")?;
    parse_machine_ticks(&s).ok_or_else(|| {
        std::io::Error::new(std::io::ErrorKind::InvalidData, "/proc/stat: no cpu line")
    })
}

fn unreadable(file: &str, pid: u32) -> std::io::Error {
    std::io::Error::new(
        std::io::ErrorKind::InvalidData,
        format!("/proc/{pid}/{file}: unexpected format"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_ticks_of_a_process() {
        // A real line (kernel 6.1), the command name with a space and a parenthesis in it.
        let stat = "4242 (kycq (w) x) S 4200 4242 4200 34816 4242 4194304 9512 0 0 0 \
                    1234 567 0 0 20 0 6 0 881234 1150083072 10862 18446744073709551615 \
                    1 1 0 0 0 0 0 4096 17640 0 0 0 17 1 0 0 0 0 0";
        assert_eq!(parse_pid_stat_ticks(stat), Some(1234 + 567));
        assert_eq!(parse_pid_stat_ticks("4242 (kycq) S 1 2"), None);
        assert_eq!(parse_pid_stat_ticks("no parenthesis"), None);
    }

    #[test]
    fn peak_rss_of_a_process() {
        let status = "Name:\tkycq\nVmPeak:\t  1123000 kB\nVmSize:\t  1122996 kB\n\
                      VmHWM:\t    48212 kB\nVmRSS:\t    43000 kB\n";
        assert_eq!(parse_vm_hwm_kib(status), Some(48212));
        assert_eq!(parse_vm_hwm_kib("Name:\tkthreadd\n"), None);
    }

    #[test]
    fn busy_and_total_ticks_of_the_machine() {
        let stat = "cpu  100 5 50 800 20 3 2 1 7 0\ncpu0 50 2 25 400 10 1 1 0 3 0\nintr 1 2 3\n";
        // total = 100+5+50+800+20+3+2+1 = 981; idle = 800 + 20
        assert_eq!(parse_machine_ticks(stat), Some((161, 981)));
        assert_eq!(parse_machine_ticks("cpu0 1 2 3 4 5\n"), None);
        assert_eq!(parse_machine_ticks("cpu  1 2 x 4 5\n"), None);
    }

    #[test]
    fn clock_ticks_from_the_auxiliary_vector() {
        let words = |pairs: &[(usize, usize)]| -> Vec<u8> {
            pairs
                .iter()
                .flat_map(|(k, v)| [k.to_ne_bytes(), v.to_ne_bytes()])
                .flatten()
                .collect()
        };
        assert_eq!(
            parse_auxv_clk_tck(&words(&[(33, 0x7fff), (6, 4096), (17, 100), (0, 0)])),
            Some(100)
        );
        assert_eq!(
            parse_auxv_clk_tck(&words(&[(6, 4096), (0, 0), (17, 250)])),
            None
        );
        assert_eq!(parse_auxv_clk_tck(&[]), None);
        // This machine's own.
        assert!(clk_tck() > 0);
        assert!(process_ticks(std::process::id()).is_ok());
        assert!(peak_rss_kib(std::process::id()).unwrap() > 0);
        let (busy, total) = machine_ticks().unwrap();
        assert!(busy <= total && total > 0);
    }
}
