//! The contract between the scheduler (coordinator and workers) and the job logic.
//!
//! The scheduler never looks inside a task: it leases [`TaskSpec`]s that a [`JobDriver`] makes
//! ready, hands them to a worker's [`TaskExecutor`], retries retryable failures, and gives each
//! successful [`TaskOutput`] back to the driver. The driver decides what the tasks are, merges
//! outputs in a fixed order (so results never depend on which worker finished first) and writes
//! the job's results.

use futures::future::BoxFuture;

/// One unit of work, serialisable so it can cross gRPC.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskSpec {
    /// Unique within a job and deterministic: derived from the task's inputs and settings, so a
    /// rerun of the same job names the same tasks (this is what makes resume work).
    pub id: String,
    /// A short human-readable kind for logs and progress (`moments`, `cross`, `dft-block`, ...).
    pub kind: String,
    /// Opaque to the scheduler: what the executor needs to run the task.
    pub payload: Vec<u8>,
}

/// What a task produced. Large outputs are stored in the object store by the executor and
/// `payload` holds a reference to them; the scheduler does not care which.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskOutput {
    pub payload: Vec<u8>,
}

/// Why a task failed, classified once, where the failure is understood.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TaskFailure {
    /// Running it again may succeed: I/O, the object store, a lost worker.
    #[error("retryable failure in task {task_id}: {message}")]
    Retryable { task_id: String, message: String },
    /// Running it again cannot succeed: bad input, a result that cannot be computed.
    #[error("task {task_id} failed: {message}")]
    Fatal { task_id: String, message: String },
}

impl TaskFailure {
    pub fn is_retryable(&self) -> bool {
        matches!(self, TaskFailure::Retryable { .. })
    }
}

/// Progress of a job in tasks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Progress {
    pub done: u64,
    /// The job's tasks in all: from the plan up front where the driver can tell (the sweep
    /// does; see `SweepDriver::progress`), else the tasks known so far.
    pub total: u64,
}

/// What a finished job left behind.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct JobSummary {
    /// Where the results were written (an object-store URL).
    pub output_url: String,
    /// Human-readable lines for a terminal summary.
    pub lines: Vec<String>,
}

/// Work that follows a job's written results (a sweep's analyses and report): lines to add to the
/// job's summary, or the failure that fails the job. See [`JobDriver::after_finish`].
pub type AfterFinish = BoxFuture<'static, Result<Vec<String>, TaskFailure>>;

/// The job logic, driven by the coordinator. Implementations are state machines; the
/// coordinator calls them from one task at a time (never concurrently), and without holding its
/// scheduler: a driver may take its time over the store while leases and heartbeats go on.
pub trait JobDriver: Send {
    /// Tasks that became ready since the last call (each returned exactly once). Tasks whose
    /// results are already stored (resume, incremental runs) are completed internally and never
    /// returned. After a retryable failure the coordinator calls it again later: a failed call
    /// must leave nothing half-planned (no task issued twice, none lost).
    fn take_ready(&mut self) -> BoxFuture<'_, Result<Vec<TaskSpec>, TaskFailure>>;

    /// A task finished. May make more tasks ready (returned by the next [`JobDriver::take_ready`],
    /// which the coordinator calls after every completed task). After a retryable failure the
    /// coordinator runs the task again and reports it again: the driver must still be waiting
    /// for it then, and merge it as if it were the first report.
    fn complete(
        &mut self,
        task_id: String,
        output: TaskOutput,
    ) -> BoxFuture<'_, Result<(), TaskFailure>>;

    /// Checks a worker's output for `task_id` before [`JobDriver::complete`] sees it (shape,
    /// finiteness, the kind of output the task gives). An `Err` names what is wrong: the
    /// coordinator then drops the worker that sent it and runs the task elsewhere, so a faulty or
    /// hostile worker cannot corrupt a job. Outputs of tasks the driver no longer waits for may
    /// pass (a duplicate changes nothing).
    fn validate(&self, _task_id: &str, _output: &TaskOutput) -> Result<(), String> {
        Ok(())
    }

    /// True once every task is complete and nothing more will become ready.
    fn all_done(&self) -> bool;

    /// Writes the results; called after `all_done()`, and again after a retryable failure (so
    /// writing twice must give what writing once gives).
    fn finish(&mut self) -> BoxFuture<'_, Result<JobSummary, TaskFailure>>;

    /// Called once after [`JobDriver::finish`] succeeded: work that must end before the job
    /// counts as succeeded, but that the coordinator runs on its own (it may take minutes, and
    /// the scheduler keeps serving other jobs meanwhile). `None`: the job has succeeded.
    fn after_finish(&mut self, _summary: &JobSummary) -> Option<AfterFinish> {
        None
    }

    fn progress(&self) -> Progress;
}

/// Runs tasks on a worker. Stateless apart from caches; must be safe to call concurrently.
pub trait TaskExecutor: Send + Sync + 'static {
    fn execute(&self, task: TaskSpec) -> BoxFuture<'static, Result<TaskOutput, TaskFailure>>;
}

/// Builds a driver for a submitted job. The job spec crosses gRPC as TOML text (the same text a
/// user writes in `JOB.toml`), so the coordinator needs no knowledge of its fields.
pub trait JobDriverFactory: Send + Sync + 'static {
    fn create(
        &self,
        job_spec_toml: String,
    ) -> BoxFuture<'static, Result<Box<dyn JobDriver>, TaskFailure>>;
}
