//! A tiny job for exercising the scheduler: no svcca maths, just arithmetic with a known answer.
//!
//! The job sums `1/(k+1)` for `k` in `0..tasks * terms_per_task`: one `part` task per range of
//! terms, then one `reduce` task that adds the parts in index order (so the job's total grows by
//! one when the second stage is planned, like the real planner's passes). Floating-point addition
//! does not commute bit-for-bit, so merging in completion order would show up as a different
//! last digit: the printed sum is a check that merging is order-independent.
//!
//! It serves the coordinator's state-machine tests, the in-process cluster tests and the process
//! tests (the CLI's hidden `--test-sum-jobs` flag makes `svcca coordinator` and `svcca worker`
//! use it). It is not a feature for users.
//!
//! Job spec (TOML):
//! ```toml
//! [test_sum]
//! tasks = 16            # part tasks
//! terms_per_task = 1000
//! task_ms = 200         # each task sleeps this long on its blocking thread
//! fatal_task = 3        # optional: this part fails with a non-retryable error
//! merge_ms = 0          # optional: each merge of a result takes this long on the coordinator
//! ```

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use futures::FutureExt;
use futures::future::BoxFuture;
use serde::{Deserialize, Serialize};

use crate::driver::{
    JobDriver, JobDriverFactory, JobSummary, Progress, TaskExecutor, TaskFailure, TaskOutput,
    TaskSpec,
};

#[derive(Debug, Clone, Deserialize)]
struct SpecFile {
    test_sum: SumSpec,
}

/// The `[test_sum]` table of a test job spec.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
pub struct SumSpec {
    pub tasks: u64,
    #[serde(default = "default_terms")]
    pub terms_per_task: u64,
    #[serde(default)]
    pub task_ms: u64,
    #[serde(default)]
    pub fatal_task: Option<u64>,
    /// How long the driver takes over each result it merges (as a cache far away would).
    #[serde(default)]
    pub merge_ms: u64,
}

fn default_terms() -> u64 {
    1000
}

impl SumSpec {
    pub fn new(tasks: u64) -> Self {
        Self {
            tasks,
            terms_per_task: default_terms(),
            task_ms: 0,
            fatal_task: None,
            merge_ms: 0,
        }
    }

    pub fn to_toml(&self) -> String {
        let mut text = format!(
            "[test_sum]\ntasks = {}\nterms_per_task = {}\ntask_ms = {}\n",
            self.tasks, self.terms_per_task, self.task_ms
        );
        if let Some(fatal) = self.fatal_task {
            text.push_str(&format!("fatal_task = {fatal}\n"));
        }
        if self.merge_ms > 0 {
            text.push_str(&format!("merge_ms = {}\n", self.merge_ms));
        }
        text
    }

    /// The job's answer, summed the same way the tasks do (parts in index order).
    pub fn expected_sum(&self) -> f64 {
        (0..self.tasks)
            .map(|i| part_sum(i * self.terms_per_task, (i + 1) * self.terms_per_task))
            .fold(0.0, |acc, part| acc + part)
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
enum Payload {
    Part {
        start: u64,
        end: u64,
        task_ms: u64,
        fatal: bool,
    },
    Reduce {
        parts: Vec<f64>,
        task_ms: u64,
    },
}

fn part_sum(start: u64, end: u64) -> f64 {
    (start..end)
        .map(|k| 1.0 / (k as f64 + 1.0))
        .fold(0.0, |acc, x| acc + x)
}

/// Reads the summary line the driver writes, back into the number.
pub fn sum_from_summary(summary: &JobSummary) -> Option<f64> {
    summary
        .lines
        .iter()
        .find_map(|line| line.strip_prefix("sum = "))
        .and_then(|v| v.trim().parse().ok())
}

/// Builds [`SumDriver`]s from `[test_sum]` specs.
#[derive(Debug, Default, Clone)]
pub struct SumJobFactory;

impl JobDriverFactory for SumJobFactory {
    fn create(
        &self,
        job_spec_toml: String,
    ) -> BoxFuture<'static, Result<Box<dyn JobDriver>, TaskFailure>> {
        async move {
            let spec: SpecFile =
                toml::from_str(&job_spec_toml).map_err(|e| TaskFailure::Fatal {
                    task_id: "job-spec".into(),
                    message: format!("not a test_sum job spec: {e}"),
                })?;
            if spec.test_sum.tasks == 0 {
                return Err(TaskFailure::Fatal {
                    task_id: "job-spec".into(),
                    message: "test_sum.tasks must be > 0".into(),
                });
            }
            Ok(Box::new(SumDriver::new(spec.test_sum)) as Box<dyn JobDriver>)
        }
        .boxed()
    }
}

/// The test job's state machine (see the module documentation).
#[derive(Debug)]
pub struct SumDriver {
    spec: SumSpec,
    planned: bool,
    parts: Vec<Option<f64>>,
    reduce_planned: bool,
    total: Option<f64>,
}

impl SumDriver {
    pub fn new(spec: SumSpec) -> Self {
        let parts = vec![None; usize::try_from(spec.tasks).unwrap_or(0)];
        Self {
            spec,
            planned: false,
            parts,
            reduce_planned: false,
            total: None,
        }
    }

    fn task(id: String, kind: &str, payload: &Payload) -> TaskSpec {
        TaskSpec {
            id,
            kind: kind.into(),
            payload: serde_json::to_vec(payload).unwrap_or_default(),
        }
    }
}

fn fatal(task_id: &str, message: impl Into<String>) -> TaskFailure {
    TaskFailure::Fatal {
        task_id: task_id.into(),
        message: message.into(),
    }
}

fn decode_f64(task_id: &str, bytes: &[u8]) -> Result<f64, TaskFailure> {
    let bytes: [u8; 8] = bytes
        .try_into()
        .map_err(|_| fatal(task_id, "output is not 8 bytes"))?;
    Ok(f64::from_le_bytes(bytes))
}

impl JobDriver for SumDriver {
    fn take_ready(&mut self) -> BoxFuture<'_, Result<Vec<TaskSpec>, TaskFailure>> {
        let mut ready = Vec::new();
        if !self.planned {
            self.planned = true;
            let n = self.spec.terms_per_task;
            for i in 0..self.spec.tasks {
                let payload = Payload::Part {
                    start: i * n,
                    end: (i + 1) * n,
                    task_ms: self.spec.task_ms,
                    fatal: self.spec.fatal_task == Some(i),
                };
                ready.push(Self::task(format!("part-{i}"), "part", &payload));
            }
        } else if !self.reduce_planned && self.parts.iter().all(Option::is_some) {
            self.reduce_planned = true;
            let parts = self.parts.iter().flatten().copied().collect();
            ready.push(Self::task(
                "reduce".into(),
                "reduce",
                &Payload::Reduce {
                    parts,
                    task_ms: self.spec.task_ms,
                },
            ));
        }
        async move { Ok(ready) }.boxed()
    }

    fn complete(
        &mut self,
        task_id: String,
        output: TaskOutput,
    ) -> BoxFuture<'_, Result<(), TaskFailure>> {
        let outcome = (|| {
            let value = decode_f64(&task_id, &output.payload)?;
            if task_id == "reduce" {
                self.total = Some(value);
                return Ok(());
            }
            let index: usize = task_id
                .strip_prefix("part-")
                .and_then(|i| i.parse().ok())
                .ok_or_else(|| fatal(&task_id, "unknown task"))?;
            let slot = self
                .parts
                .get_mut(index)
                .ok_or_else(|| fatal(&task_id, "unknown task"))?;
            if slot.replace(value).is_some() {
                return Err(fatal(&task_id, "completed twice"));
            }
            Ok(())
        })();
        let merge = Duration::from_millis(self.spec.merge_ms);
        async move {
            if !merge.is_zero() {
                tokio::time::sleep(merge).await;
            }
            outcome
        }
        .boxed()
    }

    fn validate(&self, task_id: &str, output: &TaskOutput) -> Result<(), String> {
        let value = decode_f64(task_id, &output.payload).map_err(|f| f.to_string())?;
        if !value.is_finite() {
            return Err(format!("the sum {value} is not finite"));
        }
        // Every term is positive, so a part (and the total) lies between its smallest and its
        // largest possible value: a wrong range or a forged number shows.
        let (low, high) = if task_id == "reduce" {
            (0.0, f64::INFINITY)
        } else {
            let index: u64 = task_id
                .strip_prefix("part-")
                .and_then(|i| i.parse().ok())
                .filter(|i| *i < self.spec.tasks)
                .ok_or_else(|| format!("no task {task_id} in this job"))?;
            let (start, end) = (
                index * self.spec.terms_per_task,
                (index + 1) * self.spec.terms_per_task,
            );
            let n = (end - start) as f64;
            (n / (end as f64), n / (start as f64 + 1.0))
        };
        if value <= 0.0 || value < low * (1.0 - 1e-12) || value > high * (1.0 + 1e-12) {
            return Err(format!(
                "{value} is outside the range [{low}, {high}] a sum of this task's terms can take"
            ));
        }
        Ok(())
    }

    fn all_done(&self) -> bool {
        self.total.is_some()
    }

    fn finish(&mut self) -> BoxFuture<'_, Result<JobSummary, TaskFailure>> {
        let summary = self.total.map(|total| JobSummary {
            output_url: "memory://test-sum".into(),
            lines: vec![
                format!("sum = {total:e}"),
                format!("parts = {}", self.parts.len()),
            ],
        });
        async move { summary.ok_or_else(|| fatal("finish", "finish before the reduce task")) }
            .boxed()
    }

    fn progress(&self) -> Progress {
        let parts_done = self.parts.iter().filter(|p| p.is_some()).count() as u64;
        let reduce = u64::from(self.reduce_planned);
        Progress {
            done: parts_done + u64::from(self.total.is_some()),
            total: self.spec.tasks + reduce,
        }
    }
}

/// Runs the test job's tasks. It blocks (sleeps) like real compute does, so it must run on a
/// blocking thread: the worker takes care of that.
#[derive(Debug, Default, Clone)]
pub struct SumExecutor {
    /// The first this-many executions fail with a retryable error (shared by clones).
    retryable_failures: Arc<AtomicU64>,
}

impl SumExecutor {
    pub fn new() -> Self {
        Self::default()
    }

    /// Makes the next `count` executions fail with a retryable error, as a flaky store would.
    pub fn with_retryable_failures(self, count: u64) -> Self {
        self.retryable_failures.store(count, Ordering::SeqCst);
        self
    }

    /// Runs one task synchronously.
    pub fn run(&self, task: &TaskSpec) -> Result<TaskOutput, TaskFailure> {
        self.run_with(task, |ms| std::thread::sleep(Duration::from_millis(ms)))
    }

    fn run_with(&self, task: &TaskSpec, work: impl FnOnce(u64)) -> Result<TaskOutput, TaskFailure> {
        let payload: Payload = serde_json::from_slice(&task.payload)
            .map_err(|e| fatal(&task.id, format!("bad payload: {e}")))?;
        let flaky = self
            .retryable_failures
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |left| {
                left.checked_sub(1)
            })
            .is_ok();
        let (value, task_ms) = match payload {
            Payload::Part { fatal: true, .. } => {
                return Err(fatal(&task.id, "injected non-retryable failure"));
            }
            Payload::Part {
                start,
                end,
                task_ms,
                ..
            } => (part_sum(start, end), task_ms),
            Payload::Reduce { parts, task_ms } => {
                (parts.iter().fold(0.0, |acc, p| acc + p), task_ms)
            }
        };
        work(task_ms);
        if flaky {
            return Err(TaskFailure::Retryable {
                task_id: task.id.clone(),
                message: "injected retryable failure".into(),
            });
        }
        Ok(TaskOutput {
            payload: value.to_le_bytes().to_vec(),
        })
    }
}

impl TaskExecutor for SumExecutor {
    fn execute(&self, task: TaskSpec) -> BoxFuture<'static, Result<TaskOutput, TaskFailure>> {
        let this = self.clone();
        async move {
            // Blocking steps of at most 20 ms with an await point between them, as the real
            // executor's reads and chunk products are: a revoked lease stops between steps.
            let task_ms = match serde_json::from_slice::<Payload>(&task.payload) {
                Ok(Payload::Part { fatal: true, .. }) | Err(_) => 0,
                Ok(Payload::Part { task_ms, .. } | Payload::Reduce { task_ms, .. }) => task_ms,
            };
            let mut left = task_ms;
            while left > 0 {
                let step = left.min(20);
                std::thread::sleep(Duration::from_millis(step));
                left -= step;
                tokio::task::yield_now().await;
            }
            this.run_with(&task, |_| {})
        }
        .boxed()
    }
}
