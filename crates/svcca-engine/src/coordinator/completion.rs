//! What a coordinator does once a job's results are written, beyond the engine's own outputs.
//!
//! The engine writes a sweep's results; the analyses drawn from the activations and the HTML
//! report belong to crates the engine does not depend on. A [`CompletionHook`] is that seam: the
//! binary wraps its job factory in a [`CompletingFactory`], and every job the factory makes runs
//! the hook once its results are written, before it counts as succeeded:
//!
//! - the hook runs on a blocking thread (`spawn_blocking`), never while the scheduler's lock is
//!   held: leases, heartbeats and other jobs go on while a report is drawn;
//! - the job stays `finishing` meanwhile, so `svcca submit --wait` ends once the report is there;
//! - the hook's lines are added to the job's summary; its failure fails the job (its results are
//!   written: a resubmission resumes them from the cache and runs the hook again).

use std::sync::Arc;

use futures::FutureExt;
use futures::future::BoxFuture;

use super::service::Shared;
use crate::driver::{
    AfterFinish, JobDriver, JobDriverFactory, JobSummary, Progress, TaskFailure, TaskOutput,
    TaskSpec,
};

/// A job whose results are written, as a [`CompletionHook`] sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompletedJob {
    /// The job spec as submitted (TOML).
    pub job_spec_toml: String,
    /// What the driver's `finish` reported.
    pub summary: JobSummary,
}

/// Work run after each job's results are written (see the module documentation). Blocking: it
/// runs on a thread of its own.
pub trait CompletionHook: Send + Sync + 'static {
    /// Checks a submitted job before it is planned, so that what the hook will need (input
    /// files, say) is refused at submission rather than after the job ran. Blocking too.
    fn check(&self, _job_spec_toml: &str) -> Result<(), TaskFailure> {
        Ok(())
    }

    /// Lines to add to the job's summary, or why the job fails.
    fn run(&self, job: &CompletedJob) -> Result<Vec<String>, TaskFailure>;
}

/// A [`JobDriverFactory`] whose jobs run `hook` once their results are written.
pub struct CompletingFactory {
    inner: Arc<dyn JobDriverFactory>,
    hook: Arc<dyn CompletionHook>,
}

impl CompletingFactory {
    pub fn new(inner: Arc<dyn JobDriverFactory>, hook: Arc<dyn CompletionHook>) -> Self {
        Self { inner, hook }
    }
}

impl JobDriverFactory for CompletingFactory {
    fn create(
        &self,
        job_spec_toml: String,
    ) -> BoxFuture<'static, Result<Box<dyn JobDriver>, TaskFailure>> {
        let inner = self.inner.create(job_spec_toml.clone());
        let hook = self.hook.clone();
        async move {
            let checked = {
                let hook = hook.clone();
                let spec = job_spec_toml.clone();
                tokio::task::spawn_blocking(move || hook.check(&spec)).await
            };
            checked.unwrap_or_else(|e| Err(panicked(e)))?;
            let driver: Box<dyn JobDriver> = Box::new(CompletingDriver {
                inner: inner.await?,
                job_spec_toml,
                hook,
            });
            Ok(driver)
        }
        .boxed()
    }
}

/// The job's own driver, and the hook to run after it.
struct CompletingDriver {
    inner: Box<dyn JobDriver>,
    job_spec_toml: String,
    hook: Arc<dyn CompletionHook>,
}

impl JobDriver for CompletingDriver {
    fn take_ready(&mut self) -> BoxFuture<'_, Result<Vec<TaskSpec>, TaskFailure>> {
        self.inner.take_ready()
    }

    fn complete(
        &mut self,
        task_id: String,
        output: TaskOutput,
    ) -> BoxFuture<'_, Result<(), TaskFailure>> {
        self.inner.complete(task_id, output)
    }

    fn validate(&self, task_id: &str, output: &TaskOutput) -> Result<(), String> {
        self.inner.validate(task_id, output)
    }

    fn all_done(&self) -> bool {
        self.inner.all_done()
    }

    fn finish(&mut self) -> BoxFuture<'_, Result<JobSummary, TaskFailure>> {
        self.inner.finish()
    }

    fn after_finish(&mut self, summary: &JobSummary) -> Option<AfterFinish> {
        let inner = self.inner.after_finish(summary);
        let hook = self.hook.clone();
        let job = CompletedJob {
            job_spec_toml: self.job_spec_toml.clone(),
            summary: summary.clone(),
        };
        Some(
            async move {
                let mut lines = match inner {
                    Some(step) => step.await?,
                    None => Vec::new(),
                };
                let ran = tokio::task::spawn_blocking(move || hook.run(&job)).await;
                let more = ran.unwrap_or_else(|e| Err(panicked(e)))?;
                lines.extend(more);
                Ok(lines)
            }
            .boxed(),
        )
    }

    fn progress(&self) -> Progress {
        self.inner.progress()
    }
}

fn panicked(error: tokio::task::JoinError) -> TaskFailure {
    TaskFailure::Fatal {
        task_id: "after-job".into(),
        message: format!("the coordinator's step after the job panicked: {error}"),
    }
}

/// Runs the after-steps that jobs finished under the lock just released, each on its own task,
/// and records each outcome with the scheduler when it ends.
pub(super) fn spawn_after_steps(shared: &Arc<Shared>, steps: Vec<(String, AfterFinish)>) {
    for (job_id, step) in steps {
        let shared = shared.clone();
        tokio::spawn(async move {
            let outcome = step.await;
            shared
                .scheduler
                .lock()
                .await
                .after_step_done(&job_id, outcome);
            shared.work.notify_waiters();
        });
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;
    use std::time::Instant;

    use super::*;
    use crate::coordinator::testkit::{SumExecutor, SumJobFactory, SumSpec, sum_from_summary};
    use crate::coordinator::{CoordinatorConfig, JobState, Scheduler};

    /// Records what it saw; fails when told to.
    struct Recorder {
        seen: Mutex<Vec<CompletedJob>>,
        fail: bool,
    }

    impl CompletionHook for Recorder {
        fn run(&self, job: &CompletedJob) -> Result<Vec<String>, TaskFailure> {
            self.seen.lock().unwrap().push(job.clone());
            if self.fail {
                return Err(TaskFailure::Retryable {
                    task_id: "after-job".into(),
                    message: "the report could not be written".into(),
                });
            }
            Ok(vec!["report: drawn".into()])
        }
    }

    /// Runs a sum job to its end on the scheduler with one worker, executing tasks in-line.
    async fn run_job(hook: Arc<Recorder>) -> (Scheduler, String, Vec<(String, AfterFinish)>) {
        let factory = CompletingFactory::new(Arc::new(SumJobFactory), hook);
        let spec = SumSpec::new(3);
        let now = Instant::now();
        let mut scheduler = Scheduler::new(CoordinatorConfig::default(), now);
        let worker = scheduler
            .register_worker("w", svcca_proto::PROTOCOL_VERSION, now)
            .unwrap()
            .worker_id;
        let driver = factory.create(spec.to_toml()).await.unwrap();
        let job_id = scheduler.submit(driver, now).await;
        let executor = SumExecutor::new();
        let mut steps = Vec::new();
        while let Some(leased) = scheduler.lease(&worker, now).unwrap() {
            let output = executor.run(&leased.task).unwrap();
            scheduler
                .report_result(&worker, &leased.lease_id, output, now)
                .await
                .unwrap();
            steps.extend(scheduler.take_after_steps());
        }
        (scheduler, job_id, steps)
    }

    #[tokio::test]
    async fn a_job_succeeds_only_once_its_hook_ran_and_keeps_its_lines() {
        let hook = Arc::new(Recorder {
            seen: Mutex::new(Vec::new()),
            fail: false,
        });
        let (mut scheduler, job_id, mut steps) = run_job(hook.clone()).await;
        // Results are written, the hook has not run: the job is still finishing.
        assert_eq!(scheduler.job(&job_id).unwrap().state, JobState::Finishing);
        assert!(hook.seen.lock().unwrap().is_empty());
        assert_eq!(steps.len(), 1, "one after-step per job");
        assert!(scheduler.take_after_steps().is_empty(), "handed out once");
        let (id, step) = steps.pop().unwrap();
        assert_eq!(id, job_id);
        let outcome = step.await;
        scheduler.after_step_done(&job_id, outcome);
        let info = scheduler.job(&job_id).unwrap();
        assert_eq!(info.state, JobState::Succeeded);
        let summary = info.summary.unwrap();
        assert_eq!(summary.lines.last().unwrap(), "report: drawn");
        // The job's own summary is kept, and the hook saw it and the spec as submitted.
        assert!(sum_from_summary(&summary).is_some());
        let seen = hook.seen.lock().unwrap();
        assert_eq!(seen.len(), 1);
        assert_eq!(seen[0].job_spec_toml, SumSpec::new(3).to_toml());
    }

    #[tokio::test]
    async fn a_failing_hook_fails_the_job_and_a_cancelled_job_stays_cancelled() {
        let hook = Arc::new(Recorder {
            seen: Mutex::new(Vec::new()),
            fail: true,
        });
        let (mut scheduler, job_id, mut steps) = run_job(hook.clone()).await;
        let (_, step) = steps.pop().unwrap();
        scheduler.after_step_done(&job_id, step.await);
        let info = scheduler.job(&job_id).unwrap();
        assert_eq!(info.state, JobState::Failed);
        let failure = info.failure.unwrap();
        assert!(failure.retryable);
        assert!(failure.message.contains("the report could not be written"));

        let (mut scheduler, job_id, mut steps) = run_job(hook).await;
        scheduler.cancel(&job_id).unwrap();
        let (_, step) = steps.pop().unwrap();
        scheduler.after_step_done(&job_id, step.await);
        assert_eq!(scheduler.job(&job_id).unwrap().state, JobState::Cancelled);
    }
}
