//! Reading captured backtraces in allocation tests: the frames that say who allocated.

/// The function names of a backtrace's text, innermost first, without the standard library's
/// frames and without frames whose name starts with one of `skipped` (the test's own allocator).
pub fn application_frames<'a>(text: &'a str, skipped: &[&str]) -> Vec<&'a str> {
    const STANDARD: [&str; 7] = ["std::", "core::", "alloc::", "<alloc::", "<core::", "<std::", "__rust"];
    text.lines()
        .map(str::trim)
        .filter(|l| l.split_once(": ").is_some_and(|(n, _)| n.parse::<u32>().is_ok()))
        .map(|l| l.split_once(": ").map_or(l, |(_, f)| f))
        .filter(|f| {
            !STANDARD.iter().chain(skipped).any(|p| f.starts_with(p))
                && !skipped.iter().any(|p| f.starts_with(&format!("<{p}")))
        })
        .collect()
}
