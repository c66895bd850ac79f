//! `call-outcome policy diff --from OLD --to NEW FILE`: what a policy change would have
//! done to the outcomes already seen.
//!
//! Reads JSON lines — the events `call-outcome subscribe --all-categories --from-oldest`
//! prints, or plain outcomes (`{"to": …, "sip_code": 486, "at": "…"}`) — and replays them
//! in time order through two fresh in-memory replays, one per policy: each classifies
//! the outcome (the policy's overrides included), records it in its own history (an
//! embedded store, windowed on the events' own clock, so histories and suppression
//! evolve as they would have under that policy) and decides. It then counts the
//! decisions that differ and tabulates them by rule, action and category, with a few
//! example calls per changed cell.
//!
//! Memory is bounded whatever the file's length: lines are streamed; a reorder window of
//! [`REORDER_WINDOW`] lines puts slightly unordered input in time order (later lines
//! that are older still are replayed as read, and counted); histories live in the
//! embedded store, bounded by `store.max_destinations`; examples are capped per cell.
//!
//! Owns reading lines and reporting; classification and decisions are the policy's, the
//! history the store's. A line is one report: the file is not deduplicated.

use super::CliError;
use crate::classify::ClassifyError;
use crate::config::Config;
use crate::domain::destination::normalize;
use crate::domain::{Action, Category, Classification, Decision, HistoryEntry, Outcome};
use crate::pipeline::jitter_seed;
use crate::policy::{Policy, PolicyInput};
use crate::store::memory::MemoryStore;
use clap::Args;
use serde::Deserialize;
use serde_json::json;
use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap};
use std::io::{BufRead, IsTerminal, Write};
use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime};

/// Lines held to put input in time order (about 1 KB each at most).
const REORDER_WINDOW: usize = 32 * 1024;
/// Errors listed in the report (all are counted).
const ERRORS_SHOWN: usize = 10;
/// Longest line read; a longer one is skipped as an error (bounded memory).
const MAX_LINE_BYTES: usize = 1024 * 1024;

#[derive(Debug, Args)]
pub struct PolicyDiffArgs {
    /// The policy in force when the outcomes happened.
    #[arg(long)]
    pub from: PathBuf,
    /// The policy to compare it with.
    #[arg(long)]
    pub to: PathBuf,
    /// JSON lines: `subscribe` events or plain outcomes ("-" reads standard input).
    pub file: PathBuf,
    /// Print one JSON object instead of tables.
    #[arg(long)]
    pub json: bool,
    /// Tenant of lines that name none.
    #[arg(long, default_value = "default")]
    pub tenant: String,
    /// Service config whose `default_region` and `[store]` limits (history window) the
    /// replay uses [default: the built-in defaults].
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Example calls shown per changed cell.
    #[arg(long, default_value_t = 3)]
    pub examples: usize,
    /// Exit with status 1 when any decision changed (as `diff` does).
    #[arg(long)]
    pub exit_code: bool,
}

/// A line's outcome fields: those of `subscribe`'s `outcome` object, or of a plain line.
#[derive(Debug, Default, Deserialize)]
struct LineOutcome {
    #[serde(default)]
    call_id: String,
    #[serde(default)]
    attempt: Option<u32>,
    #[serde(default)]
    from: String,
    #[serde(default)]
    to: String,
    #[serde(default)]
    sip_code: Option<i64>,
    #[serde(default)]
    reason_phrase: String,
    #[serde(default)]
    reason_header: String,
    #[serde(default)]
    retry_after_header: String,
    #[serde(default)]
    raw_sip_response: Option<String>,
    #[serde(default)]
    provider: String,
    #[serde(default)]
    provider_cause: String,
    #[serde(default)]
    labels: BTreeMap<String, String>,
    #[serde(default)]
    delivery: Option<String>,
    /// A plain line's time.
    #[serde(default)]
    at: Option<TimeValue>,
    #[serde(default)]
    ended_at: Option<TimeValue>,
}

/// RFC 3339 text (`2026-12-05T06:29:06.123Z`) or Unix seconds.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum TimeValue {
    Text(String),
    Seconds(f64),
}

impl TimeValue {
    fn parse(&self) -> Result<SystemTime, String> {
        match self {
            TimeValue::Text(t) => humantime::parse_rfc3339_weak(t.trim())
                .map_err(|e| format!("time `{t}` is not RFC 3339 in UTC ({e})")),
            TimeValue::Seconds(s) if s.is_finite() && *s >= 0.0 => {
                Ok(SystemTime::UNIX_EPOCH + Duration::from_secs_f64(*s))
            }
            TimeValue::Seconds(s) => Err(format!("time {s} is not a Unix time")),
        }
    }
}

#[derive(Debug, Deserialize)]
struct Line {
    #[serde(default)]
    tenant: Option<String>,
    /// A `subscribe` event's time and outcome.
    #[serde(default)]
    recorded_at: Option<TimeValue>,
    #[serde(default)]
    outcome: Option<LineOutcome>,
    #[serde(flatten)]
    plain: LineOutcome,
}

/// One outcome to replay, ordered by time then by line.
struct Item {
    at: SystemTime,
    line: u64,
    tenant: String,
    outcome: Outcome,
}

impl PartialEq for Item {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.line) == (other.at, other.line)
    }
}
impl Eq for Item {}
impl PartialOrd for Item {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Item {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.at, self.line).cmp(&(other.at, other.line))
    }
}

/// A line as an outcome; `previous` is the time of a line without one.
fn item(text: &str, line: u64, default_tenant: &str, previous: SystemTime) -> Result<Item, String> {
    let parsed: Line = serde_json::from_str(text).map_err(|e| format!("not JSON: {e}"))?;
    let (o, time) = match parsed.outcome {
        Some(o) => (o, parsed.recorded_at),
        None => {
            let mut o = parsed.plain;
            let time = o.at.take().or(parsed.recorded_at).or(o.ended_at.take());
            (o, time)
        }
    };
    let at = match time {
        Some(t) => t.parse()?,
        None => previous,
    };
    let tenant = parsed
        .tenant
        .filter(|t| !t.is_empty())
        .unwrap_or_else(|| default_tenant.to_owned());
    let provider = (!o.provider.is_empty() || !o.provider_cause.is_empty())
        .then_some((o.provider, o.provider_cause));
    Ok(Item {
        at,
        line,
        tenant,
        outcome: Outcome {
            call_id: if o.call_id.is_empty() {
                format!("line-{line}")
            } else {
                o.call_id
            },
            attempt: o.attempt.filter(|a| *a > 0),
            from: o.from,
            to: o.to,
            sip_code: o.sip_code,
            reason_phrase: o.reason_phrase,
            reason_header: o.reason_header,
            retry_after_header: o.retry_after_header,
            raw_sip_response: o.raw_sip_response.map(String::into_bytes),
            provider,
            started_at: None,
            ended_at: Some(at),
            labels: o.labels,
            delivery: o.delivery,
        },
    })
}

/// One policy's replay: the policy and its own history.
struct Replay {
    policy: Policy,
    store: MemoryStore,
}

impl Replay {
    fn run(
        &self,
        item: &Item,
        destination: &str,
    ) -> Result<(Classification, Decision), ClassifyError> {
        let tenant = item.tenant.as_str();
        let outcome = &item.outcome;
        let classification = self.policy.classify(tenant, outcome)?;
        let attempt = outcome.attempt.unwrap_or(0);
        let entry = HistoryEntry {
            at: item.at,
            attempt,
            category: classification.category,
            sip_code: classification.sip_code,
        };
        // A destination the store cannot take (an over-long key) is decided on its own.
        let history = self
            .store
            .record_at(tenant, destination, &outcome.call_id, entry, item.at)
            .unwrap_or_else(|_| crate::domain::HistorySnapshot {
                destination: destination.to_owned(),
                entries: vec![entry],
            });
        let decision = self.policy.decide(&PolicyInput {
            tenant,
            outcome,
            classification: &classification,
            history: &history,
            includes_current: true,
            now: item.at,
            jitter_seed: jitter_seed(tenant, &outcome.call_id, attempt),
        });
        Ok((classification, decision))
    }
}

/// What a decision is judged by: behaviour, not wording (the explanation is left out;
/// the message to the user is in).
fn behaviour<'a>(c: &Classification, d: &'a Decision) -> impl PartialEq + 'a {
    (
        (c.category, c.fault, c.retryable),
        (d.rule.as_str(), d.action),
        (
            d.notify_user,
            d.user_message.as_str(),
            d.alternatives.as_slice(),
        ),
        (d.alert_operator, d.suppressed, d.avoid_route_seconds),
        d.retry.as_ref().map(|r| (r.delay_seconds, r.max_attempts)),
    )
}

#[derive(Debug, Default)]
struct Cell {
    count: u64,
    examples: Vec<serde_json::Value>,
}

#[derive(Debug, Default)]
struct Tally {
    lines: u64,
    replayed: u64,
    changed: u64,
    skipped: u64,
    out_of_order: u64,
    /// The first errors by line number: (line, message).
    errors: Vec<(u64, String)>,
    rules: BTreeMap<(String, String), Cell>,
    actions: BTreeMap<(Action, Action), Cell>,
    categories: BTreeMap<(Category, Category), Cell>,
}

impl Tally {
    fn skip(&mut self, line: u64, error: &str) {
        self.skipped += 1;
        // Replay is deferred by the reorder window, so errors come a little out of
        // line order: keep the lowest lines.
        self.errors.push((line, error.to_owned()));
        self.errors.sort_by_key(|(line, _)| *line);
        self.errors.truncate(ERRORS_SHOWN);
    }
}

fn example(
    item: &Item,
    old: (&Classification, &Decision),
    new: (&Classification, &Decision),
) -> serde_json::Value {
    let side = |(c, d): (&Classification, &Decision)| {
        json!({
            "category": c.category.as_str(),
            "override": c.override_name.as_deref(),
            "rule": d.rule,
            "action": d.action.as_str(),
            "suppressed": d.suppressed,
            "explanation": d.explanation,
        })
    };
    json!({
        "line": item.line,
        "at": humantime::format_rfc3339_millis(item.at).to_string(),
        "tenant": item.tenant,
        "call_id": item.outcome.call_id,
        "attempt": item.outcome.attempt,
        "to": item.outcome.to,
        "sip_code": item.outcome.sip_code,
        "reason_phrase": item.outcome.reason_phrase,
        "old": side(old),
        "new": side(new),
    })
}

fn add<K: Ord>(map: &mut BTreeMap<K, Cell>, key: K, limit: usize, example: &serde_json::Value) {
    let cell = map.entry(key).or_default();
    cell.count += 1;
    if cell.examples.len() < limit {
        cell.examples.push(example.clone());
    }
}

/// Progress on standard error, when it is a terminal, at most four times a second.
struct Progress {
    on: bool,
    last: Instant,
}

impl Progress {
    fn tick(&mut self, tally: &Tally) {
        if self.on
            && tally.lines.is_multiple_of(4096)
            && self.last.elapsed() >= Duration::from_millis(250)
        {
            self.last = Instant::now();
            eprint!(
                "\r{} lines read, {} replayed, {} changed",
                tally.lines, tally.replayed, tally.changed
            );
            let _ = std::io::stderr().flush();
        }
    }

    fn done(&self) {
        if self.on {
            eprint!("\r\x1b[K");
        }
    }
}

pub fn run(args: PolicyDiffArgs) -> Result<bool, CliError> {
    let config = Config::load(args.config.as_deref())?;
    let region = config.region()?;
    let old = crate::config::load_policy(&args.from)?;
    let new = crate::config::load_policy(&args.to)?;
    let (old_version, new_version) = (old.version().to_owned(), new.version().to_owned());
    let replays = [
        Replay {
            policy: old,
            store: MemoryStore::new(config.store.clone()),
        },
        Replay {
            policy: new,
            store: MemoryStore::new(config.store.clone()),
        },
    ];
    let reader: Box<dyn BufRead> = if args.file.as_os_str() == "-" {
        Box::new(std::io::stdin().lock())
    } else {
        let file = std::fs::File::open(&args.file).map_err(|error| CliError::Io {
            path: args.file.clone(),
            error,
        })?;
        Box::new(std::io::BufReader::with_capacity(256 * 1024, file))
    };

    let mut tally = Tally::default();
    let mut progress = Progress {
        on: std::io::stderr().is_terminal(),
        last: Instant::now(),
    };
    let mut pending: BinaryHeap<Reverse<Item>> = BinaryHeap::new();
    let mut previous = SystemTime::now();
    let mut replayed_until: Option<SystemTime> = None;
    let mut replay = |item: Item, tally: &mut Tally| {
        if replayed_until.is_some_and(|t| item.at < t) {
            tally.out_of_order += 1;
        } else {
            replayed_until = Some(item.at);
        }
        let destination = normalize(&item.outcome.to, region);
        let (a, b) = (
            replays[0].run(&item, &destination),
            replays[1].run(&item, &destination),
        );
        match (a, b) {
            (Ok(old), Ok(new)) => {
                tally.replayed += 1;
                if behaviour(&old.0, &old.1) != behaviour(&new.0, &new.1) {
                    tally.changed += 1;
                    let ex = example(&item, (&old.0, &old.1), (&new.0, &new.1));
                    let n = args.examples;
                    add(
                        &mut tally.rules,
                        (old.1.rule.clone(), new.1.rule.clone()),
                        n,
                        &ex,
                    );
                    add(&mut tally.actions, (old.1.action, new.1.action), n, &ex);
                    add(
                        &mut tally.categories,
                        (old.0.category, new.0.category),
                        n,
                        &ex,
                    );
                }
            }
            (Err(e), _) | (_, Err(e)) => tally.skip(item.line, &format!("{} ({})", e, e.field())),
        }
    };

    let mut reader = reader;
    let mut buffer = Vec::new();
    loop {
        buffer.clear();
        let read = std::io::Read::take(&mut reader, MAX_LINE_BYTES as u64 + 1)
            .read_until(b'\n', &mut buffer)
            .map_err(|error| CliError::Io {
                path: args.file.clone(),
                error,
            })?;
        if read == 0 {
            break;
        }
        tally.lines += 1;
        let line = tally.lines;
        if buffer.len() > MAX_LINE_BYTES {
            // Skip the rest of the over-long line.
            let mut rest = Vec::new();
            while !buffer.ends_with(b"\n") {
                rest.clear();
                let n = std::io::Read::take(&mut reader, MAX_LINE_BYTES as u64)
                    .read_until(b'\n', &mut rest)
                    .unwrap_or(0);
                if n == 0 {
                    break;
                }
                buffer.clear();
                buffer.extend_from_slice(&rest);
            }
            tally.skip(line, &format!("longer than {MAX_LINE_BYTES} bytes"));
            continue;
        }
        let text = match std::str::from_utf8(&buffer) {
            Ok(t) => t.trim(),
            Err(_) => {
                tally.skip(line, "not UTF-8");
                continue;
            }
        };
        if text.is_empty() || text.starts_with("{\"heartbeat\"") {
            continue;
        }
        match item(text, line, &args.tenant, previous) {
            Err(e) => tally.skip(line, &e),
            Ok(item) => {
                previous = item.at;
                pending.push(Reverse(item));
                if pending.len() > REORDER_WINDOW
                    && let Some(Reverse(first)) = pending.pop()
                {
                    replay(first, &mut tally);
                }
            }
        }
        progress.tick(&tally);
    }
    while let Some(Reverse(item)) = pending.pop() {
        replay(item, &mut tally);
    }
    progress.done();

    if args.json {
        println!("{}", report_json(&args, &tally, &old_version, &new_version));
    } else {
        print!("{}", report_text(&args, &tally, &old_version, &new_version));
    }
    Ok(tally.changed > 0)
}

fn cells_json<K>(
    map: &BTreeMap<K, Cell>,
    key: impl Fn(&K) -> (String, String),
) -> serde_json::Value {
    let mut rows: Vec<(&K, &Cell)> = map.iter().collect();
    rows.sort_by_key(|row| Reverse(row.1.count));
    serde_json::Value::Array(
        rows.into_iter()
            .map(|(k, cell)| {
                let (old, new) = key(k);
                json!({"old": old, "new": new, "count": cell.count, "examples": cell.examples})
            })
            .collect(),
    )
}

fn report_json(args: &PolicyDiffArgs, t: &Tally, old: &str, new: &str) -> serde_json::Value {
    json!({
        "from": {"file": args.from.display().to_string(), "version": old},
        "to": {"file": args.to.display().to_string(), "version": new},
        "lines": t.lines,
        "replayed": t.replayed,
        "changed": t.changed,
        "skipped": t.skipped,
        "out_of_order": t.out_of_order,
        "errors": t.errors.iter().map(|(line, e)| format!("line {line}: {e}")).collect::<Vec<_>>(),
        "rules": cells_json(&t.rules, |(a, b)| (a.clone(), b.clone())),
        "actions": cells_json(&t.actions, |(a, b)| (a.as_str().to_owned(), b.as_str().to_owned())),
        "categories": cells_json(&t.categories, |(a, b)| (a.as_str().to_owned(), b.as_str().to_owned())),
    })
}

fn table<K>(
    out: &mut String,
    title: &str,
    map: &BTreeMap<K, Cell>,
    key: impl Fn(&K) -> (String, String),
) {
    use std::fmt::Write as _;
    if map.is_empty() {
        return;
    }
    let mut rows: Vec<(String, String, &Cell)> = map
        .iter()
        .map(|(k, c)| {
            let (a, b) = key(k);
            (a, b, c)
        })
        .collect();
    rows.sort_by(|a, b| {
        b.2.count
            .cmp(&a.2.count)
            .then_with(|| (&a.0, &a.1).cmp(&(&b.0, &b.1)))
    });
    let width = rows
        .iter()
        .map(|r| r.0.chars().count())
        .max()
        .unwrap_or(0)
        .max(3);
    let _ = writeln!(out, "\n{title}");
    let _ = writeln!(out, "  {:>7}  {:<width$}  new", "count", "old");
    for (a, b, cell) in rows {
        let _ = writeln!(out, "  {:>7}  {a:<width$}  {b}", cell.count);
    }
}

fn report_text(args: &PolicyDiffArgs, t: &Tally, old: &str, new: &str) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "Replayed {} of {} lines in time order: {} ({old}) against {} ({new}).",
        t.replayed,
        t.lines,
        args.from.display(),
        args.to.display()
    );
    let percent = if t.replayed == 0 {
        0.0
    } else {
        t.changed as f64 * 100.0 / t.replayed as f64
    };
    let _ = writeln!(
        out,
        "Decisions changed: {} of {} ({percent:.1} %).",
        t.changed, t.replayed
    );
    if t.skipped > 0 {
        let _ = writeln!(out, "Skipped {} lines:", t.skipped);
        for (line, e) in &t.errors {
            let _ = writeln!(out, "  line {line}: {e}");
        }
        if t.skipped > t.errors.len() as u64 {
            let _ = writeln!(out, "  … and {} more", t.skipped - t.errors.len() as u64);
        }
    }
    if t.out_of_order > 0 {
        let _ = writeln!(
            out,
            "{} lines were older than lines {REORDER_WINDOW} before them and were replayed as read.",
            t.out_of_order
        );
    }
    table(&mut out, "By rule:", &t.rules, |(a, b)| {
        (a.clone(), b.clone())
    });
    table(&mut out, "By action:", &t.actions, |(a, b)| {
        (a.as_str().into(), b.as_str().into())
    });
    table(&mut out, "By category:", &t.categories, |(a, b)| {
        (a.as_str().into(), b.as_str().into())
    });
    if !t.rules.is_empty() && args.examples > 0 {
        let _ = writeln!(out, "\nExamples:");
        let mut rows: Vec<_> = t.rules.iter().collect();
        rows.sort_by(|a, b| b.1.count.cmp(&a.1.count).then_with(|| a.0.cmp(b.0)));
        for ((a, b), cell) in rows {
            let _ = writeln!(out, "  {a} → {b}:");
            for ex in &cell.examples {
                let code = ex["sip_code"]
                    .as_i64()
                    .map_or("-".to_owned(), |c| c.to_string());
                let phrase = ex["reason_phrase"].as_str().unwrap_or("");
                let side = |v: &serde_json::Value| {
                    format!(
                        "{} {}{}",
                        v["category"].as_str().unwrap_or(""),
                        v["action"].as_str().unwrap_or(""),
                        if v["suppressed"] == json!(true) {
                            " suppressed"
                        } else {
                            ""
                        }
                    )
                };
                let _ = writeln!(
                    out,
                    "    line {} ({}): {} call {} to {}, {code}{}{}: {} → {}",
                    ex["line"],
                    ex["at"].as_str().unwrap_or(""),
                    ex["tenant"].as_str().unwrap_or(""),
                    ex["call_id"].as_str().unwrap_or(""),
                    ex["to"].as_str().unwrap_or(""),
                    if phrase.is_empty() { "" } else { " " },
                    phrase,
                    side(&ex["old"]),
                    side(&ex["new"]),
                );
            }
        }
    }
    out
}
