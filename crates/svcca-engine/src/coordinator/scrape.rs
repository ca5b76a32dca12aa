//! The coordinator's Prometheus metrics (see [`crate::metrics`] for how they are served).

use std::sync::Arc;

use futures::FutureExt;

use super::service::Shared;
use crate::metrics::{Exposition, Render, storage_metrics};

/// Renders the coordinator's metrics from the scheduler's counters at each scrape.
pub(super) fn render(shared: Arc<Shared>) -> Render {
    Arc::new(move || {
        let shared = shared.clone();
        async move {
            let scheduler = shared.scheduler.lock().await;
            let stats = scheduler.stats();
            let mut page = Exposition::new();
            page.counter(
                "svcca_tasks_done_total",
                "Task results accepted and merged.",
                stats.tasks_done,
            );
            page.counter(
                "svcca_tasks_failed_total",
                "Failed task attempts (reported failures, lost leases, invalid results).",
                stats.tasks_failed,
            );
            page.counter(
                "svcca_tasks_retried_total",
                "Failed task attempts whose task was queued again.",
                stats.tasks_retried,
            );
            page.counter(
                "svcca_workers_lost_total",
                "Workers lost after missing their heartbeats.",
                stats.workers_lost,
            );
            page.counter(
                "svcca_workers_dropped_total",
                "Workers dropped for reporting invalid results.",
                stats.workers_dropped,
            );
            page.gauge(
                "svcca_workers_alive",
                "Workers registered now.",
                f64::from(scheduler.workers_alive()),
            );
            let counts: Vec<(&str, f64)> = scheduler
                .job_counts()
                .into_iter()
                .map(|(state, n)| (state.as_str(), n as f64))
                .collect();
            page.labelled_gauge("svcca_jobs", "Jobs by state.", "state", &counts);
            page.histogram(
                "svcca_task_seconds",
                "Time from a task's lease to its accepted result.",
                &stats.task_latency,
            );
            drop(scheduler);
            storage_metrics(&mut page);
            page.finish()
        }
        .boxed()
    })
}
