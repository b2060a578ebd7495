//! Resident memory read natively from `/proc/<pid>/statm` (no psutil call per sweep).

use once_cell::sync::Lazy;

static PAGE_SIZE: Lazy<u64> = Lazy::new(|| {
    // SAFETY: sysconf has no preconditions.
    let size = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    if size > 0 {
        size as u64
    } else {
        4096
    }
});

/// Parse the resident-pages field of a statm line into MiB.
pub fn parse_statm_mb(statm: &str, page_size: u64) -> Option<f64> {
    let resident: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some((resident * page_size) as f64 / (1024.0 * 1024.0))
}

/// RSS of `pid` in MiB (`None` if it does not exist). `pid = None` reads our own.
pub fn rss_mb(pid: Option<i64>) -> Option<f64> {
    let path = match pid {
        Some(pid) => format!("/proc/{pid}/statm"),
        None => "/proc/self/statm".to_string(),
    };
    let text = std::fs::read_to_string(path).ok()?;
    parse_statm_mb(&text, *PAGE_SIZE)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_resident_pages() {
        assert_eq!(parse_statm_mb("1000 256 10 1 0 50 0", 4096), Some(1.0));
        assert_eq!(parse_statm_mb("garbage", 4096), None);
        assert_eq!(parse_statm_mb("", 4096), None);
    }

    #[test]
    fn reads_our_own_rss() {
        let own = rss_mb(None).unwrap();
        assert!(own > 0.1, "{own}");
        assert!(rss_mb(Some(i32::MAX as i64)).is_none());
    }
}
