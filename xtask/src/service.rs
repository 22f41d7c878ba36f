//! `cargo xtask service [--instances N] [--load] [--seconds S]`: the products service
//! (`examples/service`) as N instances (2 or 3, default 3) on free loopback ports, sharing one
//! Redis (a private `redis-server`, or `REDIS_URL`) and PostgreSQL (`DATABASE_URL`, the server
//! on 127.0.0.1:5432 when it lets `postgres` into `test`, or a private server: testkit's
//! `Postgres`). URLs reach the instances through the environment, never their command line. Without `--load` they run until Ctrl-C. With `--load`, wrk drives
//! every instance for S seconds (default 15) with a read-heavy Zipf-like mix plus writes, once
//! with tiercache and once with the cache off, and a table compares requests/s, latency and
//! database queries per request; then writes on one instance are read back on the others and
//! the stale reads counted. The table also goes to `target/tiercache-service/report.md`.

use std::{
    io::{Read, Write},
    net::{Ipv4Addr, TcpListener, TcpStream},
    path::Path,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use crate::{redis, run};

const WRK_INSTRUCTION: &str =
    "wrk is not installed: run `sudo apt-get install -y wrk`, then run again";
const PRODUCTS: u64 = 10_000;
/// Writes whose read-back is checked on the other instances.
const STALE_ROUNDS: u64 = 200;
/// The staleness bound the README states for Pub/Sub on a healthy fleet.
const BOUND: Duration = Duration::from_millis(250);

struct Options {
    instances: usize,
    load: bool,
    seconds: u64,
}

fn options(args: &[String]) -> Result<Options, String> {
    let mut options = Options {
        instances: 3,
        load: false,
        seconds: 15,
    };
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--load" => options.load = true,
            "--instances" | "--seconds" => {
                let value = args
                    .next()
                    .and_then(|value| value.parse::<u64>().ok())
                    .ok_or_else(|| format!("{arg} takes a number"))?;
                if arg == "--seconds" {
                    options.seconds = value.max(1);
                } else if (2..=3).contains(&value) {
                    options.instances = usize::try_from(value).unwrap_or(3);
                } else {
                    return Err(format!("--instances takes 2 or 3, not {value}"));
                }
            }
            _ => return Err(format!("unknown argument {arg}")),
        }
    }
    Ok(options)
}

/// A process this task started, ended (by its pid) when dropped.
struct Started(Child);

impl Drop for Started {
    fn drop(&mut self) {
        // SIGTERM first (the service shuts down gracefully on it), then make sure.
        let _term = Command::new("kill")
            .args(["-TERM", &self.0.id().to_string()])
            .status();
        let until = Instant::now() + Duration::from_secs(3);
        while Instant::now() < until {
            if matches!(self.0.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _kill = self.0.kill();
        let _reaped = self.0.wait();
    }
}

fn free_port() -> Result<u16, String> {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|listener| listener.local_addr())
        .map(|addr| addr.port())
        .map_err(|err| format!("no free port: {err}"))
}

fn wrk_installed() -> bool {
    Command::new("wrk")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok()
}

fn ensure_wrk() -> Result<(), String> {
    if wrk_installed() {
        return Ok(());
    }
    if redis::is_root() {
        println!("== wrk is missing: installing it with apt-get");
        let _updated = redis::apt_get(&["update", "-qq"]);
        let _installed = redis::apt_get(&["install", "-y", "-qq", "wrk"]);
    }
    if wrk_installed() {
        Ok(())
    } else {
        Err(WRK_INSTRUCTION.to_owned())
    }
}

fn database_url() -> Result<String, String> {
    crate::postgres::ensure_available()?;
    let postgres = tiercache_testkit::Postgres::shared().map_err(|err| err.to_string())?;
    if postgres.is_private() {
        println!("== PostgreSQL: a private server, stopped when this ends");
    }
    Ok(postgres.url().to_owned())
}

/// One HTTP/1.1 request on its own connection: (status, body).
fn http(port: u16, method: &str, path: &str, body: &str) -> Result<(u16, String), String> {
    let mut stream = TcpStream::connect((Ipv4Addr::LOCALHOST, port))
        .map_err(|err| format!("127.0.0.1:{port}: {err}"))?;
    let _timeout = stream.set_read_timeout(Some(Duration::from_secs(10)));
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    stream
        .write_all(request.as_bytes())
        .map_err(|err| format!("127.0.0.1:{port}: {err}"))?;
    let mut response = String::new();
    stream
        .read_to_string(&mut response)
        .map_err(|err| format!("127.0.0.1:{port}: {err}"))?;
    let status = response
        .get(9..12)
        .and_then(|status| status.parse().ok())
        .ok_or_else(|| format!("127.0.0.1:{port}: not an HTTP response"))?;
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.to_owned())
        .unwrap_or_default();
    Ok((status, body))
}

struct Fleet {
    ports: Vec<u16>,
    _instances: Vec<Started>,
}

/// How the instances of one run are started.
struct Setup<'a> {
    binary: &'a Path,
    count: usize,
    redis_url: &'a str,
    database_url: &'a str,
    cache: bool,
    /// The cache's namespace: each run its own, so that nothing cached by an earlier run (or by
    /// the run without the cache, whose writes invalidate nothing) is read.
    namespace: String,
    /// Start from freshly seeded data (the first instance drops and seeds the schema).
    reset: bool,
}

fn wait_healthy(port: u16) -> Result<(), String> {
    let until = Instant::now() + Duration::from_secs(60);
    loop {
        if matches!(http(port, "GET", "/healthz", ""), Ok((200, _))) {
            return Ok(());
        }
        if Instant::now() > until {
            return Err(format!("instance on port {port} did not become healthy"));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn start_fleet(setup: &Setup<'_>) -> Result<Fleet, String> {
    let mut ports = Vec::new();
    let mut instances = Vec::new();
    for index in 0..setup.count {
        let port = free_port()?;
        let mut command = Command::new(setup.binary);
        command
            .args(["--port", &port.to_string(), "--schema", "tiercache_service"])
            .args([
                "--namespace",
                &setup.namespace,
                "--seed",
                &PRODUCTS.to_string(),
            ])
            .env("REDIS_URL", setup.redis_url)
            .env("DATABASE_URL", setup.database_url)
            .stdout(Stdio::null())
            .stderr(Stdio::inherit());
        if !setup.cache {
            command.arg("--no-cache");
        }
        if setup.reset && index == 0 {
            command.arg("--reset");
        }
        let child = command
            .spawn()
            .map_err(|err| format!("cannot start {}: {err}", setup.binary.display()))?;
        instances.push(Started(child));
        ports.push(port);
        if index == 0 {
            // The first prepares (or resets) the schema before the others look at it.
            wait_healthy(port)?;
        }
    }
    for port in &ports {
        wait_healthy(*port)?;
    }
    Ok(Fleet {
        ports,
        _instances: instances,
    })
}

fn start_redis() -> Result<(String, Option<Started>), String> {
    if let Ok(url) = std::env::var("REDIS_URL") {
        return Ok((url, None));
    }
    redis::ensure_installed()?;
    let port = free_port()?;
    let child = Command::new("redis-server")
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
        .args(["--save", "", "--appendonly", "no"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|err| format!("cannot start redis-server: {err}"))?;
    let started = Started(child);
    let until = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect((Ipv4Addr::LOCALHOST, port)).is_err() {
        if Instant::now() > until {
            return Err("redis-server did not come up".to_owned());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok((format!("redis://127.0.0.1:{port}"), Some(started)))
}

pub(crate) fn service(args: &[String]) -> Result<(), String> {
    let options = options(args)?;
    if options.load {
        ensure_wrk()?;
    }
    let database_url = database_url()?;
    run::cargo(
        &["build", "--release", "--package", "tiercache-service"],
        &[],
    )?;
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map_or_else(|| run::root().join("target"), std::path::PathBuf::from);
    let binary = target.join("release/tiercache-service");
    let (redis_url, redis) = start_redis()?;
    let setup = |cache: bool, run: &str| Setup {
        binary: &binary,
        count: options.instances,
        redis_url: &redis_url,
        database_url: &database_url,
        cache,
        namespace: format!("products-{}-{run}", std::process::id()),
        reset: options.load,
    };
    if !options.load {
        let fleet = start_fleet(&setup(true, "run"))?;
        for port in &fleet.ports {
            println!("== instance: http://127.0.0.1:{port}/products/1  (/metrics, /healthz)");
        }
        if redis.is_some() {
            // Ours, on loopback, without a password: safe to show.
            println!("== Redis {redis_url} (private)");
        }
        println!("== Ctrl-C stops everything");
        loop {
            std::thread::sleep(Duration::from_secs(3600));
        }
    }
    let dir = run::root().join("target/tiercache-service");
    std::fs::create_dir_all(&dir).map_err(|err| format!("{}: {err}", dir.display()))?;
    let script = dir.join("mix.lua");
    std::fs::write(&script, MIX_LUA).map_err(|err| format!("{}: {err}", script.display()))?;
    let mut rows = Vec::new();
    let mut stale = None;
    // Without the cache first: its writes invalidate nothing, and the cached run that follows
    // starts from freshly seeded data in a namespace of its own anyway.
    for cache in [false, true] {
        let fleet = start_fleet(&setup(cache, if cache { "cached" } else { "uncached" }))?;
        let row = drive(&fleet, &script, options.seconds, cache)?;
        if cache {
            stale = Some(stale_reads(&fleet)?);
        }
        rows.push(row);
    }
    rows.reverse();
    let report = report(&rows, stale.as_ref(), &options);
    println!("{report}");
    let path = dir.join("report.md");
    std::fs::write(&path, &report).map_err(|err| format!("{}: {err}", path.display()))?;
    println!("== written to {}", path.display());
    Ok(())
}

struct Row {
    cache: bool,
    requests: u64,
    seconds: f64,
    p50_ms: f64,
    p99_ms: f64,
    errors: u64,
    queries: u64,
}

fn queries(port: u16) -> Result<u64, String> {
    let (_, metrics) = http(port, "GET", "/metrics", "")?;
    Ok(metrics
        .lines()
        .filter(|line| line.starts_with("service_db_queries_total"))
        .filter_map(|line| line.split_whitespace().last()?.parse::<u64>().ok())
        .sum())
}

fn drive(fleet: &Fleet, script: &Path, seconds: u64, cache: bool) -> Result<Row, String> {
    let before: u64 = fleet
        .ports
        .iter()
        .map(|port| queries(*port))
        .sum::<Result<u64, _>>()?;
    println!(
        "== wrk: {} instances, {seconds} s, cache {}",
        fleet.ports.len(),
        if cache { "on" } else { "off" }
    );
    let runs: Vec<Child> = fleet
        .ports
        .iter()
        .map(|port| {
            Command::new("wrk")
                .args(["-t1", "-c16", &format!("-d{seconds}s"), "--latency"])
                .arg("-s")
                .arg(script)
                .arg(format!("http://127.0.0.1:{port}"))
                .args(["--", &port.to_string()])
                .stdout(Stdio::piped())
                .stderr(Stdio::inherit())
                .spawn()
                .map_err(|err| format!("cannot run wrk: {err}"))
        })
        .collect::<Result<_, _>>()?;
    let mut row = Row {
        cache,
        requests: 0,
        seconds: 0.0,
        p50_ms: 0.0,
        p99_ms: 0.0,
        errors: 0,
        queries: 0,
    };
    let mut p50s = Vec::new();
    for run in runs {
        let out = run
            .wait_with_output()
            .map_err(|err| format!("wrk failed: {err}"))?;
        let text = String::from_utf8_lossy(&out.stdout);
        let line = text
            .lines()
            .find(|line| line.starts_with("RESULT "))
            .ok_or_else(|| format!("wrk printed no result:\n{text}"))?;
        let numbers: Vec<u64> = line
            .split_whitespace()
            .skip(1)
            .filter_map(|number| number.parse().ok())
            .collect();
        let [requests, micros, p50, p99, errors] = numbers[..] else {
            return Err(format!("cannot read wrk's result: {line}"));
        };
        row.requests += requests;
        row.seconds = row.seconds.max(micros as f64 / 1e6);
        p50s.push(p50 as f64 / 1e3);
        row.p99_ms = row.p99_ms.max(p99 as f64 / 1e3);
        row.errors += errors;
    }
    p50s.sort_by(f64::total_cmp);
    row.p50_ms = p50s.get(p50s.len() / 2).copied().unwrap_or_default();
    let after: u64 = fleet
        .ports
        .iter()
        .map(|port| queries(*port))
        .sum::<Result<u64, _>>()?;
    row.queries = after.saturating_sub(before);
    Ok(row)
}

struct Stale {
    /// Follower checks: (write, other instance) pairs.
    rounds: u64,
    /// Checks whose first read (of the product, or of one of the two lists it moved between)
    /// still showed the state before the write.
    immediately: u64,
    /// Checks that still saw it after [`BOUND`].
    after_bound: u64,
    slowest: Duration,
}

/// What a follower reads about product `id`: its version, and whether the lists of `joined`
/// and `left` hold it.
fn observe(port: u16, id: u64, joined: &str, left: &str) -> Result<(i64, bool, bool), String> {
    let json = |path: &str| -> Result<serde_json::Value, String> {
        let (status, body) = http(port, "GET", path, "")?;
        if status != 200 {
            return Err(format!("GET {path}: {status} {body}"));
        }
        serde_json::from_str(&body).map_err(|err| format!("GET {path}: {err}: {body}"))
    };
    let holds = |list: &serde_json::Value| {
        list.as_array().is_some_and(|products| {
            products
                .iter()
                .any(|product| product["id"].as_u64() == Some(id))
        })
    };
    let product = json(&format!("/products/{id}"))?;
    let version = product["version"]
        .as_i64()
        .ok_or_else(|| format!("no version in {product}"))?;
    let joined = holds(&json(&format!("/products?tag={joined}"))?);
    let left = holds(&json(&format!("/products?tag={left}"))?);
    Ok((version, joined, left))
}

/// Writes on one instance (a `PUT` returns after the cache was told), each moving a hot product
/// from one tag to another; then every other instance at once reads the product and both
/// tags' lists until it sees the write in all three.
fn stale_reads(fleet: &Fleet) -> Result<Stale, String> {
    let mut stale = Stale {
        rounds: 0,
        immediately: 0,
        after_bound: 0,
        slowest: Duration::ZERO,
    };
    for round in 0..STALE_ROUNDS {
        // The hottest products, which every instance has in L1, with their lists.
        let id = 1 + round % 20;
        let index = |value: u64| usize::try_from(value % 20).unwrap_or(0);
        let (first, seeded, other) = (
            TAG_NAMES[index(id)],
            TAG_NAMES[index(id % 7)],
            TAG_NAMES[index(id % 7 + 10)],
        );
        // Each visit of a product moves it between its seeded second tag and another one.
        let (left, joined) = if (round / 20) % 2 == 0 {
            (seeded, other)
        } else {
            (other, seeded)
        };
        for port in &fleet.ports {
            observe(*port, id, joined, left)?;
        }
        let writer = fleet.ports[usize::try_from(round).unwrap_or(0) % fleet.ports.len()];
        let body = format!(
            r#"{{"name":"product {id}","price_cents":{},"tags":["{first}","{joined}"]}}"#,
            100 + round
        );
        let path = format!("/products/{id}");
        let (status, written) = http(writer, "PUT", &path, &body)?;
        if status != 200 {
            return Err(format!("PUT {path}: {status} {written}"));
        }
        let written: serde_json::Value = serde_json::from_str(&written)
            .map_err(|err| format!("PUT {path}: {err}: {written}"))?;
        let version = written["version"]
            .as_i64()
            .ok_or_else(|| format!("no version in {written}"))?;
        let wrote_at = Instant::now();
        // `left` still holds the product when it is also its first tag.
        let left_keeps = left == first;
        let followers: Vec<u16> = fleet
            .ports
            .iter()
            .copied()
            .filter(|port| *port != writer)
            .collect();
        let checks = std::thread::scope(|scope| {
            let handles: Vec<_> = followers
                .iter()
                .map(|port| {
                    scope.spawn(move || -> Result<(bool, bool, Duration), String> {
                        let mut stale_first = false;
                        loop {
                            let (seen, in_joined, in_left) = observe(*port, id, joined, left)?;
                            if seen >= version && in_joined && in_left == left_keeps {
                                return Ok((stale_first, false, wrote_at.elapsed()));
                            }
                            stale_first = true;
                            if wrote_at.elapsed() > BOUND {
                                return Ok((true, true, wrote_at.elapsed()));
                            }
                            std::thread::sleep(Duration::from_millis(1));
                        }
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|handle| {
                    handle
                        .join()
                        .unwrap_or_else(|_| Err("a reader panicked".to_owned()))
                })
                .collect::<Vec<_>>()
        });
        for check in checks {
            let (first_stale, past_bound, took) = check?;
            stale.rounds += 1;
            stale.immediately += u64::from(first_stale);
            stale.after_bound += u64::from(past_bound);
            if !past_bound {
                stale.slowest = stale.slowest.max(took);
            }
        }
    }
    Ok(stale)
}

fn fleet_others(options: &Options) -> usize {
    options.instances - 1
}

fn report(rows: &[Row], stale: Option<&Stale>, options: &Options) -> String {
    let mut out = String::from(
        "| cache | requests/s | p50 | p99 | DB queries / request | errors |\n|---|---|---|---|---|---|\n",
    );
    for row in rows {
        let per_second = row.requests as f64 / row.seconds.max(1e-9);
        let per_request = row.queries as f64 / (row.requests.max(1) as f64);
        out.push_str(&format!(
            "| {} | {per_second:.0} | {:.2} ms | {:.2} ms | {per_request:.3} | {} |\n",
            if row.cache {
                "tiercache (L1 + Redis + bus)"
            } else {
                "off (every read a query)"
            },
            row.p50_ms,
            row.p99_ms,
            row.errors,
        ));
    }
    if let [on, off] = rows {
        let on_rate = on.requests as f64 / on.seconds.max(1e-9);
        let off_rate = off.requests as f64 / off.seconds.max(1e-9);
        out.push_str(&format!(
            "\nThroughput with the cache: {:.2}x; database queries per request: {:.1}x fewer.\n",
            on_rate / off_rate.max(1e-9),
            (off.queries as f64 / off.requests.max(1) as f64)
                / (on.queries as f64 / on.requests.max(1) as f64).max(1e-9)
        ));
    }
    if let Some(stale) = stale {
        out.push_str(&format!(
            "\nStale reads after writes: {STALE_ROUNDS} writes, each moving a hot product from one tag to another, read back on the {} other instances at once ({} checks of the product and both tags' lists): {} stale at the first read, {} still stale after {} ms; slowest to see the whole write: {:.1} ms.\n",
            fleet_others(options),
            stale.rounds,
            stale.immediately,
            stale.after_bound,
            BOUND.as_millis(),
            stale.slowest.as_secs_f64() * 1e3
        ));
    }
    out.push_str(&format!(
        "\n{} instances, wrk -t1 -c16 per instance for {} s, mix: 90% GET /products/{{id}} and 8% GET /products?tag= (both Zipf-like, P(k) ~ 1/k), 2% PUT; p50 is the median of the instances' p50, p99 the worst instance's.\n",
        options.instances, options.seconds
    ));
    out
}

const TAG_NAMES: [&str; 20] = [
    "garden", "kitchen", "outdoor", "office", "kids", "sale", "new", "eco", "premium", "classic",
    "modern", "vintage", "sport", "travel", "pets", "bath", "lighting", "storage", "tools",
    "gifts",
];

const MIX_LUA: &str = r#"-- written by cargo xtask service --load
local products = 10000
local tags = {"garden", "kitchen", "outdoor", "office", "kids", "sale", "new", "eco", "premium",
  "classic", "modern", "vintage", "sport", "travel", "pets", "bath", "lighting", "storage",
  "tools", "gifts"}
-- Each wrk process passes its own seed (-- SEED), so the instances do not get one sequence.
init = function(args)
  math.randomseed(tonumber(args[1]) or os.time())
end
-- Zipf-like (s = 1): P(k) ~ 1/k for k in 1..n.
local function zipf(n)
  return math.min(n, math.floor(math.exp(math.random() * math.log(n + 1))))
end
request = function()
  local r = math.random()
  if r < 0.90 then
    return wrk.format("GET", "/products/" .. zipf(products))
  elseif r < 0.98 then
    return wrk.format("GET", "/products?tag=" .. tags[zipf(#tags)])
  else
    -- A write; half of them move the product's second tag elsewhere.
    local id = zipf(products)
    local second = 1 + id % 7
    if math.random() < 0.5 then second = math.random(1, #tags) end
    local body = string.format('{"name":"product %d","price_cents":%d,"tags":["%s","%s"]}',
      id, math.random(100, 9999), tags[1 + id % 20], tags[second])
    return wrk.format("PUT", "/products/" .. id, {["Content-Type"] = "application/json"}, body)
  end
end
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format("RESULT %d %d %d %d %d\n", summary.requests, summary.duration,
    latency:percentile(50), latency:percentile(99),
    e.connect + e.read + e.write + e.status + e.timeout))
end
"#;
