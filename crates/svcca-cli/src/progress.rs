//! Progress of a run off a terminal: a log line at most every interval with the tasks done, the
//! job's total, the rate and an estimate of the time left (`svcca sweep` and `svcca submit
//! --wait`).
//!
//! On a terminal the progress bar says this; in a pod's log nothing did until the end. The lines
//! go through `tracing` under the target [`TARGET`], so `--log-format json` makes them JSON
//! objects with `done`, `total`, `rate_per_s` and `eta_s` fields.

use std::time::{Duration, Instant};

/// The tracing target of progress lines; `logging::init` lets it through at `info`.
pub const TARGET: &str = "svcca_progress";

/// One progress report.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ProgressLine {
    pub done: u64,
    /// The job's tasks from its plan, known from the start (corrected once, usually downwards,
    /// when pass 2 is planned: see the engine's `SweepDriver::progress`).
    pub total: u64,
    /// Tasks finished per second since the start.
    pub rate_per_s: f64,
    /// Seconds left at that rate for the tasks not done, once a task has finished.
    pub eta_s: Option<f64>,
}

impl std::fmt::Display for ProgressLine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "progress: {}/{} tasks, {:.2} tasks/s, ETA ",
            self.done, self.total, self.rate_per_s
        )?;
        match self.eta_s {
            Some(s) => write!(f, "{}", Seconds(s)),
            None => f.write_str("unknown"),
        }
    }
}

struct Seconds(f64);

impl std::fmt::Display for Seconds {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let s = self.0.round() as u64;
        match (s / 3600, s % 3600 / 60, s % 60) {
            (0, 0, s) => write!(f, "{s}s"),
            (0, m, s) => write!(f, "{m}m{s:02}s"),
            (h, m, _) => write!(f, "{h}h{m:02}m"),
        }
    }
}

/// Decides when a progress line is due.
#[derive(Debug)]
pub struct ProgressLog {
    every: Duration,
    /// Rates count the tasks done since this point: (tasks done then, when).
    base: (u64, Instant),
    /// Take the base from the first report (a job followed when already under way).
    base_from_first: bool,
    last_done: u64,
    last: Option<Instant>,
}

impl ProgressLog {
    pub fn new(every: Duration, started: Instant) -> Self {
        ProgressLog {
            every,
            base: (0, started),
            base_from_first: false,
            last_done: 0,
            last: None,
        }
    }

    /// For a job followed from outside (`svcca submit --wait`), which may be under way already
    /// (a submission that joined a running job): rates count from the first report.
    pub fn from_first_report(every: Duration, now: Instant) -> Self {
        ProgressLog {
            base_from_first: true,
            ..ProgressLog::new(every, now)
        }
    }

    /// The line to log for `done` of `total` tasks at `now`, if one is due: at the first report
    /// with work done, then at most once per interval, and always when everything known is done.
    pub fn observe(&mut self, done: u64, total: u64, now: Instant) -> Option<ProgressLine> {
        // Fewer tasks done than before: the job was planned again (a restarted coordinator
        // resumes it, counting only the work left), so the rate starts again from here.
        if std::mem::take(&mut self.base_from_first) || done < self.last_done {
            self.base = (done, now);
        }
        self.last_done = done;
        let finished = total > 0 && done >= total;
        let due = match self.last {
            None => done > 0,
            Some(last) => now.duration_since(last) >= self.every,
        };
        if !(due || finished) || self.last == Some(now) {
            return None;
        }
        self.last = Some(now);
        let elapsed = now.duration_since(self.base.1).as_secs_f64();
        let rate_per_s = if elapsed > 0.0 {
            done.saturating_sub(self.base.0) as f64 / elapsed
        } else {
            0.0
        };
        let eta_s = (rate_per_s > 0.0).then(|| total.saturating_sub(done) as f64 / rate_per_s);
        Some(ProgressLine {
            done,
            total,
            rate_per_s,
            eta_s,
        })
    }
}

/// Logs `line` under [`TARGET`].
pub fn emit(line: &ProgressLine) {
    tracing::info!(
        target: TARGET,
        done = line.done,
        total = line.total,
        rate_per_s = line.rate_per_s,
        eta_s = line.eta_s,
        "{line}"
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_come_once_per_interval_with_rate_and_eta() {
        let t0 = Instant::now();
        let at = |s: u64| t0 + Duration::from_secs(s);
        let mut log = ProgressLog::new(Duration::from_secs(30), t0);
        assert_eq!(log.observe(0, 10, at(1)), None, "nothing done yet");
        let first = log.observe(2, 10, at(10)).expect("the first finished task");
        assert_eq!((first.done, first.total), (2, 10));
        assert!((first.rate_per_s - 0.2).abs() < 1e-12);
        assert!((first.eta_s.unwrap() - 40.0).abs() < 1e-9);
        assert_eq!(log.observe(3, 10, at(20)), None, "within the interval");
        let next = log.observe(5, 12, at(40)).expect("after the interval");
        assert_eq!((next.done, next.total), (5, 12));
        assert!((next.eta_s.unwrap() - 7.0 / 0.125).abs() < 1e-9);
        let last = log
            .observe(12, 12, at(41))
            .expect("the end is always logged");
        assert_eq!(last.eta_s, Some(0.0));
        assert_eq!(
            last.to_string(),
            format!("progress: 12/12 tasks, {:.2} tasks/s, ETA 0s", 12.0 / 41.0)
        );
    }

    #[test]
    fn rates_count_from_the_first_report_or_a_replanned_job() {
        let t0 = Instant::now();
        let at = |s: u64| t0 + Duration::from_secs(s);
        // Joined a job with 50 tasks done: the 50 were not done at this rate.
        let mut log = ProgressLog::from_first_report(Duration::from_secs(10), t0);
        let first = log.observe(50, 100, at(0)).expect("the first report");
        assert_eq!((first.rate_per_s, first.eta_s), (0.0, None));
        let next = log.observe(60, 100, at(10)).expect("after the interval");
        assert!((next.rate_per_s - 1.0).abs() < 1e-12, "{next:?}");
        assert!((next.eta_s.unwrap() - 40.0).abs() < 1e-9);
        // The coordinator restarted and planned the job again: 30 tasks left of 30.
        assert_eq!(log.observe(0, 30, at(15)), None, "within the interval");
        let again = log.observe(5, 30, at(25)).expect("after the interval");
        assert!((again.rate_per_s - 0.5).abs() < 1e-12, "{again:?}");
        assert!((again.eta_s.unwrap() - 50.0).abs() < 1e-9);
    }

    #[test]
    fn durations_read_as_people_write_them() {
        assert_eq!(Seconds(59.4).to_string(), "59s");
        assert_eq!(Seconds(61.0).to_string(), "1m01s");
        assert_eq!(Seconds(7322.0).to_string(), "2h02m");
    }
}
