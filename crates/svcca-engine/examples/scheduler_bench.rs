//! How much the coordinator costs per task, with no maths: the coordinator's scheduler (the state
//! machine behind its gRPC service) driven by many simulated workers on a simulated clock, and the
//! planner on a very large dataset.
//!
//! ```text
//! cargo run --release -p svcca-engine --example scheduler_bench -- sim [WORKERS] [TASKS] [TASK_S]
//! cargo run --release -p svcca-engine --example scheduler_bench -- plan [REPRESENTATIONS]
//! cargo run --release -p svcca-engine --example scheduler_bench -- grpc [WORKERS] [TASKS] [TASK_MS]
//! ```
//!
//! `sim` (default 1,000 workers, 1,000,000 tasks of 0.5-1.5 x 2 s simulated): every worker
//! leases a task, "runs" it for its simulated duration, reports it and leases the next one; it
//! heartbeats at the coordinator's interval with the leases it holds, and the coordinator ticks
//! once a simulated second, as the service does. Wall time is the scheduler's own CPU time (one
//! thread, nothing else runs), split by call; memory is the process's peak resident set.
//!
//! `grpc` (default 1,000 workers, 100,000 tasks of 20 ms): the real thing in one process: the
//! coordinator's gRPC service on a loopback port, on a runtime of its own (one thread, named
//! `bench-coord`, so its CPU time can be read apart), and the real worker loop (lease long-poll,
//! heartbeats, reports) in `WORKERS` workers whose tasks sleep `TASK_MS`.
//!
//! `plan` (default 100,000 representations of 512 neurons: 10 seeds x 100 checkpoints x 100
//! layers): the sweep's planning steps (selection, pairs, row chunks, content keys, pass-2
//! blocks and tiles) for `vs-final` and `cross-seed`, timed, with the peak resident set.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::FutureExt;
use futures::future::BoxFuture;
use svcca_engine::client;
use svcca_engine::coordinator::{Coordinator, CoordinatorConfig, Scheduler};
use svcca_engine::driver::{
    JobDriver, JobDriverFactory, JobSummary, Progress, TaskExecutor, TaskFailure, TaskOutput,
    TaskSpec,
};
use svcca_engine::plan::{self, RepInfo};
use svcca_engine::spec::JobSpec;
use svcca_engine::worker::{Worker, WorkerConfig};
use svcca_results::RepresentationKey;

/// A job of `total` independent tasks whose outputs are counted, nothing more: what is measured
/// is the scheduler, not a driver.
struct CountingDriver {
    total: u64,
    done: u64,
    planned: bool,
}

impl JobDriver for CountingDriver {
    fn take_ready(&mut self) -> BoxFuture<'_, Result<Vec<TaskSpec>, TaskFailure>> {
        let mut ready = Vec::new();
        if !self.planned {
            self.planned = true;
            ready = (0..self.total)
                .map(|i| TaskSpec {
                    // About the size of a sweep task's id and payload reference.
                    id: format!("cross/{i:064x}"),
                    kind: "cross".into(),
                    payload: vec![b'x'; 256],
                })
                .collect();
        }
        async move { Ok(ready) }.boxed()
    }

    fn complete(
        &mut self,
        _task_id: String,
        _output: TaskOutput,
    ) -> BoxFuture<'_, Result<(), TaskFailure>> {
        self.done += 1;
        async { Ok(()) }.boxed()
    }

    fn all_done(&self) -> bool {
        self.done == self.total
    }

    fn finish(&mut self) -> BoxFuture<'_, Result<JobSummary, TaskFailure>> {
        async { Ok(JobSummary::default()) }.boxed()
    }

    fn progress(&self) -> Progress {
        Progress {
            done: self.done,
            total: self.total,
        }
    }
}

/// Builds a [`CountingDriver`] of as many tasks as the spec's text says.
struct CountingFactory;

impl JobDriverFactory for CountingFactory {
    fn create(&self, toml: String) -> BoxFuture<'static, Result<Box<dyn JobDriver>, TaskFailure>> {
        let total = toml.trim().parse().unwrap_or(1);
        async move {
            Ok(Box::new(CountingDriver {
                total,
                done: 0,
                planned: false,
            }) as Box<dyn JobDriver>)
        }
        .boxed()
    }
}

/// A task that takes `ms` of wall time and no CPU.
struct SleepExecutor {
    ms: u64,
}

impl TaskExecutor for SleepExecutor {
    fn execute(&self, _task: TaskSpec) -> BoxFuture<'static, Result<TaskOutput, TaskFailure>> {
        let ms = self.ms;
        async move {
            tokio::time::sleep(Duration::from_millis(ms)).await;
            Ok(TaskOutput {
                payload: vec![0; 8],
            })
        }
        .boxed()
    }
}

/// CPU seconds (user + system) of this process's threads named `name` (Linux; 0 elsewhere).
fn thread_cpu_s(name: &str) -> f64 {
    // Linux reports these in clock ticks of 1/100 s on every platform it runs on today.
    const TICKS: f64 = 100.0;
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return 0.0;
    };
    let mut total = 0.0;
    for task in tasks.flatten() {
        let Ok(stat) = std::fs::read_to_string(task.path().join("stat")) else {
            continue;
        };
        let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else {
            continue;
        };
        if !stat[open + 1..close].starts_with(name) {
            continue;
        }
        let fields: Vec<&str> = stat[close + 2..].split_whitespace().collect();
        let tick = |i: usize| {
            fields
                .get(i)
                .and_then(|v| v.parse::<f64>().ok())
                .unwrap_or(0.0)
        };
        total += (tick(11) + tick(12)) / TICKS;
    }
    total
}

async fn grpc(workers: usize, tasks: u64, task_ms: u64) {
    let coordinator_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("bench-coord")
        .enable_all()
        .build()
        .expect("runtime");
    let (stop_server, mut server_stopped) = tokio::sync::watch::channel(false);
    let config = CoordinatorConfig::default()
        .with_listen(std::net::SocketAddr::from(([127, 0, 0, 1], 0)))
        // Room for every worker's long poll at once.
        .with_max_lease_wait(Duration::from_secs(1));
    let coordinator = coordinator_rt
        .spawn(async move { Coordinator::bind(config, Arc::new(CountingFactory)).await })
        .await
        .expect("bind task")
        .expect("bind");
    let url = coordinator.url();
    let server = coordinator_rt.spawn(coordinator.serve(async move {
        let _ = server_stopped.wait_for(|s| *s).await;
    }));

    let (stop_workers, workers_stopped) = tokio::sync::watch::channel(false);
    let executor: Arc<dyn TaskExecutor> = Arc::new(SleepExecutor { ms: task_ms });
    let mut pool = tokio::task::JoinSet::new();
    for i in 0..workers {
        let config = WorkerConfig::new(url.clone())
            .with_name(format!("bench-{i}"))
            .with_concurrency(1)
            .with_drain_timeout(Duration::from_millis(500));
        let mut stopped = workers_stopped.clone();
        pool.spawn(Worker::new(config, executor.clone()).run(async move {
            let _ = stopped.wait_for(|s| *s).await;
        }));
    }
    // Let the workers register before the clock starts.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let cpu_before = thread_cpu_s("bench-coord");
    let wall = Instant::now();
    let job = client::submit(&url, tasks.to_string())
        .await
        .expect("submit");
    let info = client::wait_for_job(&url, &job, |_| {})
        .await
        .expect("wait");
    let wall = wall.elapsed().as_secs_f64();
    let cpu = thread_cpu_s("bench-coord") - cpu_before;
    assert_eq!(info.progress.done, tasks, "{info:?}");
    let _ = stop_workers.send(true);
    let mut reported = 0;
    while let Some(joined) = pool.join_next().await {
        if let Ok(Ok(stats)) = joined {
            reported += stats.succeeded;
        }
    }
    let _ = stop_server.send(true);
    let _ = server.await;
    let (_, peak) = memory_mib();
    let ideal = tasks as f64 * task_ms as f64 / 1e3 / workers as f64;
    println!("gRPC service: {workers} workers, {tasks} tasks of {task_ms} ms");
    println!(
        "  wall {wall:.1} s (the tasks alone: {ideal:.1} s); {reported} tasks reported by workers"
    );
    println!(
        "  coordinator threads: {cpu:.1} s CPU, {:.0} us per task, {:.0}% of one core",
        cpu * 1e6 / tasks as f64,
        100.0 * cpu / wall
    );
    println!("  process peak RSS (coordinator and every worker): {peak:.0} MiB");
    // Dropping a runtime would block inside this one.
    coordinator_rt.shutdown_background();
}

/// The resident set now and at its peak, in MiB (Linux; 0 elsewhere).
fn memory_mib() -> (f64, f64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|kb| kb.parse::<f64>().ok())
            .map_or(0.0, |kb| kb / 1024.0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// A small deterministic generator, so runs are repeatable.
struct XorShift(u64);

impl XorShift {
    fn unit(&mut self) -> f64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 >> 11) as f64 / (1u64 << 53) as f64
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Event {
    /// The worker's task ends.
    Done(u32),
    Heartbeat(u32),
    Tick,
}

#[derive(Default)]
struct Timings {
    lease: Duration,
    report: Duration,
    heartbeat: Duration,
    tick: Duration,
    leases: u64,
    empty_leases: u64,
    reports: u64,
    heartbeats: u64,
    ticks: u64,
}

fn timed<T>(total: &mut Duration, f: impl FnOnce() -> T) -> T {
    let start = Instant::now();
    let out = f();
    *total += start.elapsed();
    out
}

async fn sim(workers: u32, tasks: u64, task_s: f64) {
    let config = CoordinatorConfig::default();
    let heartbeat = config.heartbeat_interval;
    let t0 = Instant::now();
    let at = |ns: u64| t0 + Duration::from_nanos(ns);
    let mut scheduler = Scheduler::new(config, t0);
    let ids: Vec<String> = (0..workers)
        .map(|w| {
            scheduler
                .register_worker(&format!("sim-{w}"), svcca_proto::PROTOCOL_VERSION, t0)
                .expect("register")
                .worker_id
        })
        .collect();
    let (rss_before, _) = memory_mib();
    let submit_start = Instant::now();
    let job = scheduler
        .submit(
            Box::new(CountingDriver {
                total: tasks,
                done: 0,
                planned: false,
            }),
            t0,
        )
        .await;
    let submit_wall = submit_start.elapsed();
    let (rss_queued, _) = memory_mib();

    let mut rng = XorShift(0x9e37_79b9_7f4a_7c15);
    let mut held: Vec<Option<String>> = vec![None; workers as usize];
    let mut events: BinaryHeap<Reverse<(u64, Event)>> = BinaryHeap::new();
    let mut t = Timings::default();
    let hb_ns = heartbeat.as_nanos() as u64;
    let duration_ns = |rng: &mut XorShift| ((0.5 + rng.unit()) * task_s * 1e9) as u64;
    let wall = Instant::now();
    for w in 0..workers {
        // Heartbeats spread over the interval, as workers that started at different times.
        events.push(Reverse((
            hb_ns * u64::from(w) / u64::from(workers),
            Event::Heartbeat(w),
        )));
        events.push(Reverse((0, Event::Done(w))));
    }
    events.push(Reverse((1_000_000_000, Event::Tick)));
    let mut now_ns = 0;
    while let Some(Reverse((ns, event))) = events.pop() {
        now_ns = ns;
        let now = at(ns);
        match event {
            Event::Done(w) => {
                let id = &ids[w as usize];
                if let Some(lease) = held[w as usize].take() {
                    let start = Instant::now();
                    scheduler
                        .report_result(
                            id,
                            &lease,
                            TaskOutput {
                                payload: vec![0; 8],
                            },
                            now,
                        )
                        .await
                        .expect("report");
                    t.report += start.elapsed();
                    t.reports += 1;
                }
                let leased = timed(&mut t.lease, || scheduler.lease(id, now).expect("lease"));
                t.leases += 1;
                match leased {
                    Some(task) => {
                        held[w as usize] = Some(task.lease_id);
                        events.push(Reverse((ns + duration_ns(&mut rng), Event::Done(w))));
                    }
                    None => t.empty_leases += 1,
                }
            }
            Event::Heartbeat(w) => {
                let lease: Vec<String> = held[w as usize].iter().cloned().collect();
                timed(&mut t.heartbeat, || {
                    scheduler
                        .heartbeat(&ids[w as usize], Some(&lease), now)
                        .expect("heartbeat")
                });
                t.heartbeats += 1;
                if held.iter().any(Option::is_some) || t.reports < tasks {
                    events.push(Reverse((ns + hb_ns, Event::Heartbeat(w))));
                }
            }
            Event::Tick => {
                timed(&mut t.tick, || scheduler.tick(now));
                t.ticks += 1;
                if t.reports < tasks {
                    events.push(Reverse((ns + 1_000_000_000, Event::Tick)));
                }
            }
        }
        if t.reports == tasks {
            break;
        }
    }
    let wall = wall.elapsed();
    let (rss_end, peak) = memory_mib();
    let info = scheduler.job(&job).expect("job");
    assert_eq!(info.progress.done, tasks, "every task was reported once");
    let simulated = now_ns as f64 / 1e9;
    let per_task = |d: Duration| d.as_secs_f64() * 1e6 / tasks as f64;
    println!("scheduler simulation: {workers} workers, {tasks} tasks of {task_s} s (0.5-1.5x)");
    println!(
        "  submit (plan and queue every task): {:.2} s",
        submit_wall.as_secs_f64()
    );
    println!(
        "  simulated makespan {simulated:.0} s; scheduler busy {:.2} s ({:.3}% of one core)",
        wall.as_secs_f64(),
        100.0 * wall.as_secs_f64() / simulated
    );
    println!(
        "  per task: lease {:.2} us, report {:.2} us; heartbeats {:.2} us and ticks {:.3} us per task",
        per_task(t.lease),
        per_task(t.report),
        per_task(t.heartbeat),
        per_task(t.tick)
    );
    println!(
        "  traffic: {} leases ({} empty), {} reports, {} heartbeats ({:.0}/s, {:.2} per task), {} ticks",
        t.leases,
        t.empty_leases,
        t.reports,
        t.heartbeats,
        t.heartbeats as f64 / simulated,
        t.heartbeats as f64 / tasks as f64,
        t.ticks
    );
    println!(
        "  memory: {rss_before:.0} MiB before submit, {rss_queued:.0} MiB with every task queued, \
         {rss_end:.0} MiB at the end, peak {peak:.0} MiB"
    );
}

/// `seeds x steps x layers` dense representations of `width` neurons.
fn synthetic(seeds: i64, steps: i64, layers: usize, width: usize) -> Vec<RepInfo> {
    let mut reps = Vec::new();
    for seed in 0..seeds {
        for step in 0..steps {
            for layer in 0..layers {
                reps.push(RepInfo {
                    key: RepresentationKey {
                        run: "net".into(),
                        seed: Some(seed),
                        step: Some(step * 100),
                        layer: format!("l{layer:03}"),
                        tags: Default::default(),
                    },
                    shape: vec![width],
                    datapoints: 10_000,
                    checksum: format!("{seed}-{step}-{layer}"),
                    depth: None,
                    layout: None,
                });
            }
        }
    }
    reps
}

fn plan_once(all: &[RepInfo], comparison: &str) {
    let start = Instant::now();
    let spec = JobSpec::from_toml(&format!(
        "dataset = \"/data\"\noutput = \"/out\"\ncomparison = \"{comparison}\"\n"
    ))
    .expect("spec");
    let reps = plan::select(all, &spec.select).expect("select");
    let n = plan::common_datapoints(&reps).expect("datapoints");
    let pairs = plan::plan_pairs(&reps, &spec).expect("pairs");
    let max_cols = reps.iter().map(|r| r.columns() as u64).max().unwrap_or(1);
    let rows = plan::rows_per_task(&spec, n, max_cols).expect("rows");
    let chunks = plan::row_chunks(n, rows);
    let split = chunks
        .iter()
        .map(|(s, e)| format!("{s}-{e}"))
        .collect::<Vec<_>>()
        .join(",");
    let contents: Vec<String> = reps
        .iter()
        .map(|r| {
            svcca_engine::cache::hash_parts(&[
                "content",
                &r.checksum,
                &format!("{:?}", r.shape),
                &r.datapoints.to_string(),
                &split,
            ])
        })
        .collect();
    let dims: Vec<usize> = reps.iter().map(|r| r.columns()).collect();
    let blocks = plan::blocks(&reps, &dims, spec.comparison, &pairs, 8192);
    let tiles = plan::tiles(&blocks, &pairs);
    let elapsed = start.elapsed();
    let (_, peak) = memory_mib();
    println!(
        "  {comparison}: {} representations, {} pairs, {} row chunks, {} contents, {} blocks, {} tiles in {:.2} s (peak RSS so far {peak:.0} MiB)",
        reps.len(),
        pairs.len(),
        chunks.len(),
        contents.len(),
        blocks.len(),
        tiles.len(),
        elapsed.as_secs_f64()
    );
}

fn plan_bench(representations: usize) {
    let layers = 100;
    let steps = 100;
    let seeds = (representations / (layers * steps)).max(1) as i64;
    let start = Instant::now();
    let all = synthetic(seeds, steps as i64, layers, 512);
    let (_, peak) = memory_mib();
    println!(
        "planning: {} representations ({seeds} seeds x {steps} steps x {layers} layers), manifest built in {:.2} s (peak RSS {peak:.0} MiB)",
        all.len(),
        start.elapsed().as_secs_f64()
    );
    plan_once(&all, "vs-final");
    plan_once(&all, "cross-seed");
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let arg = |i: usize, default: &str| args.get(i).cloned().unwrap_or(default.to_string());
    match args.first().map(String::as_str) {
        Some("grpc") => {
            grpc(
                arg(1, "1000").parse().expect("workers"),
                arg(2, "100000").parse().expect("tasks"),
                arg(3, "20").parse().expect("task milliseconds"),
            )
            .await
        }
        Some("plan") => plan_bench(arg(1, "100000").parse().expect("representations")),
        Some("sim") | None => {
            sim(
                arg(1, "1000").parse().expect("workers"),
                arg(2, "1000000").parse().expect("tasks"),
                arg(3, "2").parse().expect("task seconds"),
            )
            .await
        }
        Some(other) => {
            eprintln!("unknown mode `{other}`: sim, grpc or plan");
            std::process::exit(2);
        }
    }
}
