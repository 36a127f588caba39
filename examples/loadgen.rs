//! A load generator for the echo service: many concurrent in-flight `UnaryEcho` calls, a
//! fixed number per round, over one (or a few) tonic `Channel`s per target.
//!
//! ```text
//! cargo run --release --example loadgen -- --target 127.0.0.1:50051 [--target HOST:PORT ...]
//!     [--baseline HOST:PORT] [--requests N] [--concurrency C] [--rounds R] [--warmup N]
//!     [--error-every K] [--error-code CODE] [--sleep-ms MS] [--deadline-ms MS]
//!     [--connections K] [--threads T] [--json]
//!     [--traceparent TRACE_ID|unique [--trace-log FILE]]
//! ```
//!
//! | flag                 | default    | meaning                                                                  |
//! |----------------------|------------|--------------------------------------------------------------------------|
//! | `--target HOST:PORT` | (required) | server to load; repeat it to spread requests round-robin over several    |
//! | `--baseline HOST:PORT` | none     | a second server: rounds alternate target / baseline and the RPS ratio is printed |
//! | `--requests N`       | 20000      | requests per round (per side with `--baseline`)                          |
//! | `--concurrency C`    | 64         | calls in flight at once                                                  |
//! | `--rounds R`         | 1 (6 with `--baseline`) | timed rounds                                                |
//! | `--warmup N`         | 0 (2000 with `--baseline`) | untimed requests sent to each side before the first round |
//! | `--error-every K`    | off        | every K-th request asks for an error (`fail:<code>`)                     |
//! | `--error-code CODE`  | `Internal` | the code those requests ask for (Go's spelling or a number)              |
//! | `--sleep-ms MS`      | off        | every other request asks the server to wait `MS` ms (`sleep:<MS>`)      |
//! | `--deadline-ms MS`   | off        | every request carries a deadline of `MS` ms (`grpc-timeout`): with a longer `--sleep-ms`, the server ends the calls at the deadline and its metrics count them `DeadlineExceeded` (tonic's server answers `Canceled`, which is what the JSON counts) |
//! | `--connections K`    | 1          | HTTP/2 connections (`Channel`s) per target                               |
//! | `--threads T`        | CPUs       | tokio worker threads of the load generator                               |
//! | `--json`             | off        | print a JSON summary as the last stdout line                             |
//! | `--traceparent T`    | off        | send a W3C `traceparent` header on every call, with trace id `T` (32 hex digits), or a fresh one per call with `unique` |
//! | `--trace-log FILE`   | off        | with `--traceparent`: write one line per call to FILE, `<trace id> <seconds> <code> <target>` (client-side latency, Go's code spelling) |
//!
//! Comparing a server with and without the metrics layer (what the README's performance
//! table reports), on a machine where other work competes for the CPU:
//!
//! ```text
//! cargo run --release --example server -- --port 50061 &
//! cargo run --release --example server -- --port 50071 --no-metrics &
//! cargo run --release --example loadgen -- --target 127.0.0.1:50061 --baseline 127.0.0.1:50071
//! ```
//!
//! Each round runs both sides back to back (the order alternates between rounds, so drift
//! in the machine's load hits both alike); the medians of the per-round RPS and their
//! ratio target/baseline are printed at the end.
//!
//! With `--json`, the last line of stdout is one object:
//!
//! ```text
//! {"requests":20000,"warmup":0,"codes":{"OK":19000,"Internal":1000},"seconds":0.71,"rps":28169.0,
//!  "per_target":{"127.0.0.1:50051":{"OK":9500,"Internal":500},"127.0.0.1:50061":{...}}}
//! ```
//!
//! `requests`, `codes` and `per_target` count every call sent to the targets, warmup
//! included (so they can be compared with the servers' `grpc_server_handled_total`);
//! `seconds` and `rps` cover only the timed rounds. With `--baseline`, the object also has
//! `baseline` (the same fields for the baseline server), `rounds` (each round's RPS of both
//! sides), `target_rps_median`, `baseline_rps_median` and `ratio`. Codes are spelled as in
//! `grpc_code` labels (Go's spelling: `OK`, `Canceled`, `Internal`, ...).
//!
//! `--traceparent` gives a server that records exemplars trace ids to link its latency
//! buckets to; `--trace-log` says which trace id each call carried and how long it took
//! (the server's handling time of that call is at most that), so exemplars can be checked.

#[path = "support/json.rs"]
mod json;

use json::json_string;

use std::{
    error::Error,
    fmt::Write as _,
    io::Write as _,
    path::PathBuf,
    process::ExitCode,
    sync::{
        Arc,
        atomic::{AtomicU64, AtomicUsize, Ordering},
    },
    time::{Duration, Instant, SystemTime},
};

use clap::Parser;
use tonic::transport::{Channel, Endpoint};
use tonic_metrics::GrpcCode;
use tonic_metrics_testing::{EchoClient, EchoRequest};

/// Concurrent unary load on the echo service; optionally compares a target with a baseline.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// Server to load (HOST:PORT); repeat to spread requests round-robin over several.
    #[arg(long = "target", value_name = "HOST:PORT", required = true)]
    targets: Vec<String>,

    /// A baseline server: rounds alternate target/baseline and the RPS ratio is printed.
    #[arg(long, value_name = "HOST:PORT")]
    baseline: Option<String>,

    /// Requests per round (per side with --baseline).
    #[arg(long, default_value_t = 20_000)]
    requests: usize,

    /// Calls in flight at once.
    #[arg(long, default_value_t = 64)]
    concurrency: usize,

    /// Timed rounds [default: 1, or 6 with --baseline].
    #[arg(long)]
    rounds: Option<usize>,

    /// Untimed requests per side before the first round [default: 0, or 2000 with --baseline].
    #[arg(long)]
    warmup: Option<usize>,

    /// Every K-th request asks for an error status ("fail:<code>").
    #[arg(long, value_name = "K")]
    error_every: Option<usize>,

    /// The status those requests ask for: Go's spelling (Internal, NotFound, ...) or a number.
    #[arg(long, default_value = "Internal", value_parser = parse_code)]
    error_code: GrpcCode,

    /// Non-error requests ask the server to wait this long ("sleep:<MS>").
    #[arg(long, value_name = "MS")]
    sleep_ms: Option<u64>,

    /// Every request carries a deadline of MS milliseconds (the grpc-timeout header).
    #[arg(long, value_name = "MS")]
    deadline_ms: Option<u64>,

    /// HTTP/2 connections (Channels) per target.
    #[arg(long, default_value_t = 1)]
    connections: usize,

    /// Tokio worker threads [default: one per CPU].
    #[arg(long)]
    threads: Option<usize>,

    /// Print a JSON summary as the last line of stdout.
    #[arg(long)]
    json: bool,

    /// Send a W3C traceparent header on every call: this trace id (32 hex digits), or
    /// `unique` for a fresh trace id per call.
    #[arg(long, value_name = "TRACE_ID|unique", value_parser = parse_trace_ids)]
    traceparent: Option<TraceIds>,

    /// With --traceparent: write "<trace id> <seconds> <code> <target>" per call to FILE.
    #[arg(long, value_name = "FILE", requires = "traceparent")]
    trace_log: Option<PathBuf>,
}

fn parse_code(text: &str) -> Result<GrpcCode, String> {
    GrpcCode::from_name(text).ok_or_else(|| format!("not a gRPC code: {text:?} (try Internal, NotFound or 13)"))
}

/// The trace ids `--traceparent` sends.
#[derive(Debug, Clone)]
enum TraceIds {
    /// The same trace id (32 lowercase hex digits) on every call.
    Fixed(String),
    /// A fresh trace id per call: a per-process prefix and a call counter.
    Unique(u64),
}

fn parse_trace_ids(text: &str) -> Result<TraceIds, String> {
    if text == "unique" {
        // Distinct runs get distinct ids: the clock and the pid, never zero.
        let nanos = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
        #[allow(clippy::cast_possible_truncation)]
        let prefix = (nanos as u64) ^ (u64::from(std::process::id()) << 32);
        return Ok(TraceIds::Unique(prefix | 1));
    }
    let valid = text.len() == 32 && text.bytes().all(|b| b.is_ascii_hexdigit()) && text.bytes().any(|b| b != b'0');
    if valid {
        Ok(TraceIds::Fixed(text.to_ascii_lowercase()))
    } else {
        Err(format!("not a trace id: {text:?} (32 hex digits, not all zero, or `unique`)"))
    }
}

/// The traceparent of each call, and what the calls that carried one gave.
struct Tracing {
    ids: TraceIds,
    /// Calls so far (all sides and rounds): the parent id, and the trace id with `Unique`.
    calls: AtomicU64,
    /// Whether each call's trace id, latency and code are kept (`--trace-log`).
    log: bool,
}

impl Tracing {
    /// The next call's trace id and `traceparent` value.
    fn next(&self) -> (String, tonic::metadata::AsciiMetadataValue) {
        let call = self.calls.fetch_add(1, Ordering::Relaxed) + 1;
        let trace_id = match &self.ids {
            TraceIds::Fixed(id) => id.clone(),
            TraceIds::Unique(prefix) => format!("{prefix:016x}{call:016x}"),
        };
        let value = format!("00-{trace_id}-{call:016x}-01");
        (trace_id, value.parse().expect("a traceparent is ASCII"))
    }
}

/// One call of `--trace-log`.
struct Traced {
    trace_id: String,
    seconds: f64,
    code: GrpcCode,
    target: usize,
}

/// Calls answered with each code, indexed by `GrpcCode::index` order (`as_i32`).
type Codes = [u64; 17];

/// The servers of one side (the targets, or the baseline), each with its channels.
struct Side {
    addrs: Vec<String>,
    /// `channels[target][connection]`.
    channels: Vec<Vec<Channel>>,
    /// Every call sent, warmup included, per target.
    codes: Vec<Codes>,
    /// Timed rounds only.
    timed_requests: usize,
    timed_seconds: f64,
    round_rps: Vec<f64>,
    /// The calls of `--trace-log`.
    traced: Vec<Traced>,
}

impl Side {
    async fn connect(addrs: Vec<String>, connections: usize) -> Result<Self, Box<dyn Error>> {
        let mut channels = Vec::with_capacity(addrs.len());
        for addr in &addrs {
            let endpoint = Endpoint::from_shared(format!("http://{addr}"))?.tcp_nodelay(true);
            let mut per_target = Vec::with_capacity(connections);
            for _ in 0..connections.max(1) {
                // Each `connect` is its own HTTP/2 connection.
                per_target
                    .push(endpoint.connect().await.map_err(|error| format!("cannot connect to {addr}: {error}"))?);
            }
            channels.push(per_target);
        }
        let codes = vec![[0; 17]; addrs.len()];
        Ok(Self {
            addrs,
            channels,
            codes,
            timed_requests: 0,
            timed_seconds: 0.0,
            round_rps: Vec::new(),
            traced: Vec::new(),
        })
    }

    /// Sends `requests` calls with `concurrency` in flight; returns the elapsed time.
    async fn run(&mut self, plan: &Plan, requests: usize) -> Duration {
        let next = Arc::new(AtomicUsize::new(0));
        let messages = Arc::new(plan.messages());
        let start = Instant::now();
        let mut workers = Vec::with_capacity(plan.concurrency);
        for worker in 0..plan.concurrency.max(1) {
            // One client per target for this worker; clones of a `Channel` share its connection.
            let mut clients: Vec<EchoClient<Channel>> = self
                .channels
                .iter()
                .map(|channels| EchoClient::new(channels[worker % channels.len()].clone()))
                .collect();
            let next = next.clone();
            let messages = messages.clone();
            let tracing = plan.tracing.clone();
            let deadline = plan.deadline;
            workers.push(tokio::spawn(async move {
                // Counted locally, merged at the end: no shared counters on the hot path.
                let mut codes = vec![[0u64; 17]; clients.len()];
                let mut traced = Vec::new();
                let log = tracing.as_ref().is_some_and(|tracing| tracing.log);
                loop {
                    let index = next.fetch_add(1, Ordering::Relaxed);
                    if index >= requests {
                        break (codes, traced);
                    }
                    let target = index % clients.len();
                    let message = messages.for_request(index).to_owned();
                    let mut request = tonic::Request::new(EchoRequest { message });
                    if let Some(deadline) = deadline {
                        request.set_timeout(deadline);
                    }
                    let trace_id = tracing.as_deref().map(|tracing| {
                        let (trace_id, traceparent) = tracing.next();
                        request.metadata_mut().insert("traceparent", traceparent);
                        trace_id
                    });
                    let started = Instant::now();
                    let code = match clients[target].unary_echo(request).await {
                        Ok(_) => GrpcCode::Ok,
                        Err(status) => status.code().into(),
                    };
                    codes[target][code.as_i32() as usize] += 1;
                    if let Some(trace_id) = trace_id.filter(|_| log) {
                        traced.push(Traced { trace_id, seconds: started.elapsed().as_secs_f64(), code, target });
                    }
                }
            }));
        }
        for worker in workers {
            let (codes, traced) = worker.await.expect("a load worker panicked");
            self.traced.extend(traced);
            for (total, counted) in self.codes.iter_mut().zip(codes) {
                for (total, counted) in total.iter_mut().zip(counted) {
                    *total += counted;
                }
            }
        }
        start.elapsed()
    }

    async fn timed_round(&mut self, plan: &Plan) -> f64 {
        let elapsed = self.run(plan, plan.requests).await.as_secs_f64();
        self.timed_requests += plan.requests;
        self.timed_seconds += elapsed;
        let rps = plan.requests as f64 / elapsed;
        self.round_rps.push(rps);
        rps
    }

    fn total_codes(&self) -> Codes {
        let mut total = [0; 17];
        for codes in &self.codes {
            for (total, n) in total.iter_mut().zip(codes) {
                *total += n;
            }
        }
        total
    }

    fn summary(&self) -> String {
        let total = self.total_codes();
        let mut line = format!("{} requests", total.iter().sum::<u64>());
        for code in GrpcCode::ALL {
            let n = total[code.as_i32() as usize];
            if n > 0 {
                let _ = write!(line, ", {} {n}", code.as_str());
            }
        }
        line
    }

    /// The JSON fields of this side (without braces).
    fn json_fields(&self, warmup: usize, per_target: bool) -> String {
        let total = self.total_codes();
        let mut out = format!(
            "\"requests\":{},\"warmup\":{},\"codes\":{},\"seconds\":{:.6},\"rps\":{:.1}",
            total.iter().sum::<u64>(),
            warmup,
            codes_json(&total),
            self.timed_seconds,
            self.timed_requests as f64 / self.timed_seconds.max(f64::MIN_POSITIVE),
        );
        if per_target {
            out.push_str(",\"per_target\":{");
            for (i, (addr, codes)) in self.addrs.iter().zip(&self.codes).enumerate() {
                if i > 0 {
                    out.push(',');
                }
                let _ = write!(out, "{}:{}", json_string(addr), codes_json(codes));
            }
            out.push('}');
        }
        out
    }
}

/// What to send.
struct Plan {
    requests: usize,
    concurrency: usize,
    error_every: Option<usize>,
    error_code: GrpcCode,
    sleep_ms: Option<u64>,
    /// The deadline every request carries (`--deadline-ms`).
    deadline: Option<Duration>,
    tracing: Option<Arc<Tracing>>,
}

impl Plan {
    fn messages(&self) -> Messages {
        Messages {
            ok: self.sleep_ms.map_or_else(|| "hello".to_owned(), |ms| format!("sleep:{ms}")),
            // The number, not the name: the echo service parses both, and "OK" is only a number there.
            fail: format!("fail:{}", self.error_code.as_i32()),
            error_every: self.error_every.filter(|&k| k > 0),
        }
    }
}

/// The two request texts, built once per round.
struct Messages {
    ok: String,
    fail: String,
    error_every: Option<usize>,
}

impl Messages {
    /// The text of request `index` (0-based): every K-th request (the K-th, 2K-th, ...) fails.
    fn for_request(&self, index: usize) -> &str {
        match self.error_every {
            Some(k) if (index + 1).is_multiple_of(k) => &self.fail,
            _ => &self.ok,
        }
    }
}

fn codes_json(codes: &Codes) -> String {
    let mut out = String::from("{");
    for code in GrpcCode::ALL {
        let n = codes[code.as_i32() as usize];
        if n > 0 {
            if out.len() > 1 {
                out.push(',');
            }
            let _ = write!(out, "\"{}\":{n}", code.as_str());
        }
    }
    out.push('}');
    out
}

fn median(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    match sorted.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => sorted[n / 2],
        n => (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0,
    }
}

fn main() -> ExitCode {
    let args = Args::parse();
    let mut runtime = tokio::runtime::Builder::new_multi_thread();
    if let Some(threads) = args.threads {
        runtime.worker_threads(threads.max(1));
    }
    let result = runtime.enable_all().build().map_err(Into::into).and_then(|runtime| runtime.block_on(run(args)));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> Result<(), Box<dyn Error>> {
    let with_baseline = args.baseline.is_some();
    let rounds = args.rounds.unwrap_or(if with_baseline { 6 } else { 1 });
    let warmup = args.warmup.unwrap_or(if with_baseline { 2_000 } else { 0 });
    let plan = Plan {
        requests: args.requests,
        concurrency: args.concurrency.max(1),
        error_every: args.error_every,
        error_code: args.error_code,
        sleep_ms: args.sleep_ms,
        deadline: args.deadline_ms.map(Duration::from_millis),
        tracing: args
            .traceparent
            .clone()
            .map(|ids| Arc::new(Tracing { ids, calls: AtomicU64::new(0), log: args.trace_log.is_some() })),
    };

    let mut target = Side::connect(args.targets.clone(), args.connections).await?;
    let mut baseline = match &args.baseline {
        Some(addr) => Some(Side::connect(vec![addr.clone()], args.connections).await?),
        None => None,
    };

    if warmup > 0 {
        target.run(&plan, warmup).await;
        if let Some(baseline) = &mut baseline {
            baseline.run(&plan, warmup).await;
        }
    }

    let target_name = args.targets.join(",");
    let mut ratios = Vec::new();
    for round in 1..=rounds {
        match &mut baseline {
            None => {
                let rps = target.timed_round(&plan).await;
                println!("round {round}: {} requests to {target_name}: {rps:.0} rps", plan.requests);
            }
            Some(baseline) => {
                // Alternate which side goes first, so a trend in the machine's load
                // (another build starting, a turbo clock fading) hits both sides alike.
                let (target_rps, baseline_rps) = if round % 2 == 1 {
                    let t = target.timed_round(&plan).await;
                    (t, baseline.timed_round(&plan).await)
                } else {
                    let b = baseline.timed_round(&plan).await;
                    (target.timed_round(&plan).await, b)
                };
                ratios.push(target_rps / baseline_rps);
                println!(
                    "round {round}: target {target_rps:.0} rps, baseline {baseline_rps:.0} rps, ratio {:.3}",
                    target_rps / baseline_rps
                );
            }
        }
    }

    println!("target {target_name}: {}", target.summary());
    let mut json = format!("{{{}", target.json_fields(warmup, true));
    if let Some(baseline) = &baseline {
        let target_median = median(&target.round_rps);
        let baseline_median = median(&baseline.round_rps);
        let ratio = target_median / baseline_median;
        println!("baseline {}: {}", baseline.addrs[0], baseline.summary());
        println!(
            "median rps: target {target_median:.0}, baseline {baseline_median:.0}; ratio target/baseline {ratio:.3} \
             (median of per-round ratios {:.3})",
            median(&ratios)
        );
        let rounds_json: Vec<String> = target
            .round_rps
            .iter()
            .zip(&baseline.round_rps)
            .map(|(t, b)| format!("{{\"target_rps\":{t:.1},\"baseline_rps\":{b:.1}}}"))
            .collect();
        let _ = write!(
            json,
            ",\"baseline\":{{\"addr\":{},{}}},\"rounds\":[{}],\"target_rps_median\":{target_median:.1},\
             \"baseline_rps_median\":{baseline_median:.1},\"ratio\":{ratio:.4},\"ratio_median_of_rounds\":{:.4}",
            json_string(&baseline.addrs[0]),
            baseline.json_fields(warmup, false),
            rounds_json.join(","),
            median(&ratios),
        );
    } else {
        println!("{:.0} rps over {rounds} round(s)", target.timed_requests as f64 / target.timed_seconds);
    }
    if let Some(path) = &args.trace_log {
        write_trace_log(path, &target, baseline.as_ref())
            .map_err(|error| format!("cannot write {}: {error}", path.display()))?;
    }
    json.push('}');
    if args.json {
        println!("{json}");
    }
    Ok(())
}

/// `--trace-log`: one line per traced call, the targets' calls first.
fn write_trace_log(path: &std::path::Path, target: &Side, baseline: Option<&Side>) -> std::io::Result<()> {
    let mut out = std::io::BufWriter::new(std::fs::File::create(path)?);
    for side in std::iter::once(target).chain(baseline) {
        for call in &side.traced {
            writeln!(out, "{} {:.6} {} {}", call.trace_id, call.seconds, call.code.as_str(), side.addrs[call.target])?;
        }
    }
    out.flush()
}
