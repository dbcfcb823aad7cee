//! `tessera db` — operator tools for the data service's redb database.

use std::io::{BufRead, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use serde_json::json;
use tessera_persistence::torture_state;
use tessera_persistence::{
    Account, AccountId, AvatarId, ExportRecord, NewAvatar, SaveBatch, SceneId, Store, Writer,
    WriterConfig,
};

/// The database file inside `--data`.
pub const DB_FILE: &str = "tessera.redb";

#[derive(Debug, Args)]
pub struct DbArgs {
    /// Data directory holding `tessera.redb`.
    #[arg(long, default_value = "./data", global = true)]
    data: PathBuf,
    #[command(subcommand)]
    command: DbCommand,
}

#[derive(Debug, Subcommand)]
enum DbCommand {
    /// Row counts and file size.
    Stats {
        /// Print one JSON object as the last line.
        #[arg(long)]
        json: bool,
    },
    /// Integrity check: exit 0 when sound, 1 with the reasons otherwise.
    Check,
    /// Write every record to stdout as JSON lines.
    Export,
    /// Read JSON lines (an export) from stdin into a new, empty database.
    Import,
    /// Manage accounts.
    #[command(subcommand)]
    Account(AccountCommand),
    /// Write durable batches of PC states and report save and reopen times.
    Bench(BenchArgs),
    /// A write-behind writer that runs until killed, printing `COMMITTED <scene> <tick>`
    /// after each durable commit (used by the crash tests and the reopen bench).
    #[command(hide = true)]
    Writer(WriterArgs),
}

#[derive(Debug, Subcommand)]
enum AccountCommand {
    /// Register an account.
    Create {
        #[arg(long)]
        email: String,
        #[arg(long)]
        password: String,
        #[arg(long)]
        nickname: Option<String>,
    },
    /// Show an account (never its password hash).
    Show {
        #[arg(long)]
        email: String,
    },
    /// Lock an account: its logins are refused.
    Lock {
        #[arg(long)]
        email: String,
    },
    /// Unlock a locked account.
    Unlock {
        #[arg(long)]
        email: String,
    },
}

#[derive(Debug, Args)]
struct BenchArgs {
    /// PC states per batch.
    #[arg(long, default_value_t = 10_000)]
    pcs: usize,
    /// Durable batches to time.
    #[arg(long, default_value_t = 50)]
    batches: usize,
    /// Before timing, grow the database to at least this many PC states (in extra scenes).
    #[arg(long, default_value_t = 0)]
    fill: u64,
    /// Instead of batches: time this many password verifications at the hashing cap.
    #[arg(long)]
    verify: Option<usize>,
    /// Print one JSON object as the last line.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Args)]
struct WriterArgs {
    /// Names the fixture: account `<prefix>@tessera.invalid`, scenes `<prefix>-<i>`.
    #[arg(long, default_value = "writer")]
    prefix: String,
    #[arg(long, default_value_t = 2)]
    scenes: usize,
    /// PCs per scene.
    #[arg(long, default_value_t = 100)]
    pcs: usize,
    /// Register an account with one avatar every this many batches (0 = never); prints
    /// `ACCOUNT <account> <avatar>` once it is committed.
    #[arg(long, default_value_t = 0)]
    accounts_every: u64,
    /// Pause between batches.
    #[arg(long, default_value_t = 0)]
    interval_ms: u64,
    /// Channel capacity of the writer.
    #[arg(long, default_value_t = 4)]
    capacity: usize,
}

impl DbArgs {
    pub fn run(self) -> anyhow::Result<ExitCode> {
        let path = self.data.join(DB_FILE);
        match self.command {
            DbCommand::Stats { json } => stats(&path, json),
            DbCommand::Check => check(&path),
            DbCommand::Export => export(&path),
            DbCommand::Import => import(&self.data, &path),
            DbCommand::Account(cmd) => account(&self.data, &path, cmd),
            DbCommand::Bench(args) => bench(&self.data, &path, &args),
            DbCommand::Writer(args) => writer(&self.data, &path, &args),
        }
    }
}

fn open_existing(path: &Path) -> anyhow::Result<Store> {
    Ok(Store::open_existing(path)?)
}

fn open_or_create(data: &Path, path: &Path) -> anyhow::Result<Store> {
    std::fs::create_dir_all(data).with_context(|| format!("creating {}", data.display()))?;
    Ok(Store::open(path)?)
}

fn stats(path: &Path, json: bool) -> anyhow::Result<ExitCode> {
    let s = open_existing(path)?.stats()?;
    println!(
        "accounts {}  avatars {}  scenes {}  pc_states {}  file_bytes {}",
        s.accounts, s.avatars, s.scenes, s.pc_states, s.file_bytes
    );
    if json {
        println!("{}", serde_json::to_string(&s)?);
    }
    Ok(ExitCode::SUCCESS)
}

fn check(path: &Path) -> anyhow::Result<ExitCode> {
    let mut store = open_existing(path)?;
    let report = store.check()?;
    if report.is_sound() {
        println!(
            "ok: {} records checked in {}",
            report.records,
            path.display()
        );
        Ok(ExitCode::SUCCESS)
    } else {
        for p in &report.problems {
            println!("problem: {p}");
        }
        eprintln!(
            "error: {} problems in {}",
            report.problems.len(),
            path.display()
        );
        Ok(ExitCode::from(1))
    }
}

fn export(path: &Path) -> anyhow::Result<ExitCode> {
    let store = open_existing(path)?;
    let stdout = std::io::stdout();
    let mut out = BufWriter::new(stdout.lock());
    let n = store.export(|record| -> std::io::Result<()> {
        serde_json::to_writer(&mut out, record)?;
        out.write_all(b"\n")
    })?;
    out.flush()?;
    eprintln!("exported {n} records");
    Ok(ExitCode::SUCCESS)
}

fn import(data: &Path, path: &Path) -> anyhow::Result<ExitCode> {
    let store = open_or_create(data, path)?;
    let mut importer = store.begin_import()?;
    for (i, line) in std::io::stdin().lock().lines().enumerate() {
        let line = line.context("reading stdin")?;
        if line.trim().is_empty() {
            continue;
        }
        let record: ExportRecord =
            serde_json::from_str(&line).with_context(|| format!("line {}: not a record", i + 1))?;
        importer
            .push(record)
            .with_context(|| format!("line {}", i + 1))?;
    }
    let s = importer.finish()?;
    println!(
        "imported accounts {}  avatars {}  scenes {}  pc_states {}",
        s.accounts, s.avatars, s.scenes, s.pc_states
    );
    Ok(ExitCode::SUCCESS)
}

fn show(a: &Account) {
    println!("id        {}", a.id);
    println!("email     {}", a.email);
    println!("nickname  {}", a.nickname);
    println!("status    {:?}", a.status);
    println!("created   {} ms", a.created_ms);
    match &a.last_login {
        Some(l) => println!("last      {} ms from {}", l.time_ms, l.address),
        None => println!("last      never"),
    }
    println!("logins    {} in history", a.history.len());
}

fn account(data: &Path, path: &Path, cmd: AccountCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        AccountCommand::Create {
            email,
            password,
            nickname,
        } => {
            let store = open_or_create(data, path)?;
            let id = store.register(&email, &password, nickname.as_deref())?;
            let a = store.account(id)?.context("account vanished")?;
            println!("created account {id} <{}>", a.email);
        }
        AccountCommand::Show { email } => {
            let store = open_existing(path)?;
            let a = store.account_by_email(&email)?;
            show(&a);
            for av in store.list_avatars(a.id)? {
                println!(
                    "avatar    {} {:?} scene {} {:?}",
                    av.id, av.name, av.scene, av.status
                );
            }
        }
        AccountCommand::Lock { email } => {
            let store = open_existing(path)?;
            let a = store.lock_account(store.account_by_email(&email)?.id)?;
            println!("locked account {} <{}>", a.id, a.email);
        }
        AccountCommand::Unlock { email } => {
            let store = open_existing(path)?;
            let a = store.unlock_account(store.account_by_email(&email)?.id)?;
            println!("unlocked account {} <{}>", a.id, a.email);
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// A fixture of `scenes` scenes with `pcs` avatars each, all owned by one account. Created
/// on first use, found again afterwards. Returns each scene's id and avatars.
fn fixture(
    store: &Store,
    prefix: &str,
    scenes: usize,
    pcs: usize,
) -> anyhow::Result<Vec<(SceneId, Vec<AvatarId>)>> {
    const CHUNK: usize = 10_000;
    let email = format!("{prefix}@tessera.invalid");
    let account: AccountId = match store.account_by_email(&email) {
        Ok(a) => a.id,
        Err(tessera_persistence::AccountUpdateError::UnknownEmail) => {
            store.register(&email, "fixture-password", Some(prefix))?
        }
        Err(e) => return Err(e.into()),
    };
    let existing = store.list_avatars(account)?;
    let mut out = Vec::with_capacity(scenes);
    for i in 0..scenes {
        let scene = store.ensure_scene(&format!("{prefix}-{i}"))?;
        let mut have: Vec<AvatarId> = existing
            .iter()
            .filter(|a| a.scene == scene)
            .map(|a| a.id)
            .collect();
        let taken = have.len();
        for start in (taken..pcs).step_by(CHUNK) {
            let new: Vec<NewAvatar> = (start..(start + CHUNK).min(pcs))
                .map(|j| NewAvatar {
                    name: format!("{prefix}{i}x{j}"),
                    figure: "bench".into(),
                    scene,
                })
                .collect();
            have.extend(store.provision_avatars(account, &new)?);
        }
        have.truncate(pcs);
        out.push((scene, have));
    }
    Ok(out)
}

fn batch_for(scene: SceneId, avatars: &[AvatarId], k: u64) -> SaveBatch {
    SaveBatch {
        objects: Vec::new(),
        scene,
        states: avatars
            .iter()
            .map(|&a| torture_state(scene, a, k))
            .collect(),
    }
}

fn newest_tick(store: &Store, scenes: &[(SceneId, Vec<AvatarId>)]) -> anyhow::Result<u64> {
    let mut k = 0;
    for (scene, _) in scenes {
        for s in store.load_scene(*scene)? {
            k = k.max(s.tick);
        }
    }
    Ok(k)
}

fn writer(data: &Path, path: &Path, args: &WriterArgs) -> anyhow::Result<ExitCode> {
    let store = Arc::new(open_or_create(data, path)?);
    let mut scenes = fixture(&store, &args.prefix, args.scenes, args.pcs)?;
    // Avatars an earlier run added (and saved) belong in every batch too, or the scene would
    // hold states of different batches.
    for (scene, avatars) in &mut scenes {
        for s in store.load_scene(*scene)? {
            if !avatars.contains(&s.avatar) {
                avatars.push(s.avatar);
            }
        }
    }
    let mut k = newest_tick(&store, &scenes)? + 1;
    println!("READY {k}");
    let config = WriterConfig {
        capacity: args.capacity,
        ..WriterConfig::default()
    };
    let writer = Writer::spawn(Arc::clone(&store), config, |report| {
        let mut out = std::io::stdout().lock();
        for (scene, tick) in &report.scenes {
            let _ = writeln!(out, "COMMITTED {scene} {tick}");
        }
    })?;
    loop {
        for (scene, avatars) in &scenes {
            writer.submit(batch_for(*scene, avatars, k));
        }
        if args.accounts_every > 0 && k % args.accounts_every == 0 {
            let email = format!("{}-{k}@tessera.invalid", args.prefix);
            let account = store.register(&email, "fixture-password", None)?;
            let Some((scene, avatars)) = scenes.first_mut() else {
                bail!("no scenes");
            };
            let avatar = store.create_avatar(
                account,
                &NewAvatar {
                    name: format!("{}a{k}", args.prefix),
                    figure: "new".into(),
                    scene: *scene,
                },
            )?;
            avatars.push(avatar);
            println!("ACCOUNT {account} {avatar}");
        }
        k += 1;
        if args.interval_ms > 0 {
            std::thread::sleep(Duration::from_millis(args.interval_ms));
        }
    }
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

/// Peak resident memory of this process, from `/proc/self/status` (Linux).
fn peak_rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

fn bench(data: &Path, path: &Path, args: &BenchArgs) -> anyhow::Result<ExitCode> {
    if let Some(n) = args.verify {
        return bench_verify(data, path, n, args.json);
    }
    if args.pcs == 0 || args.batches == 0 {
        bail!("--pcs and --batches must be at least 1");
    }
    let store = open_or_create(data, path)?;
    let scenes = fixture(&store, "bench", 1, args.pcs)?;
    let (scene, avatars) = scenes.first().context("no bench scene")?;

    // Fill: extra scenes of 10,000 PCs until the database holds `--fill` PC states.
    let mut fill_scene = 0usize;
    loop {
        let have = store.stats()?.pc_states;
        if have >= args.fill {
            break;
        }
        let pcs = usize::try_from((args.fill - have).min(10_000))?;
        let name = format!("fill{fill_scene}");
        let fs = fixture(&store, &name, 1, pcs)?;
        if let Some((s, av)) = fs.first() {
            store.save_batch(&batch_for(*s, av, 1))?;
        }
        fill_scene += 1;
        if fill_scene.is_multiple_of(10) {
            eprintln!("fill: {} pc states", store.stats()?.pc_states);
        }
    }

    let first = newest_tick(&store, &scenes)? + 1;
    let mut ms = Vec::with_capacity(args.batches);
    for k in (first..).take(args.batches) {
        let batch = batch_for(*scene, avatars, k);
        let started = Instant::now();
        let report = store.save_batch(&batch)?;
        ms.push(started.elapsed().as_secs_f64() * 1e3);
        if report.refused > 0 {
            bail!("{} states refused", report.refused);
        }
    }
    ms.sort_by(f64::total_cmp);
    let pc_states = store.stats()?.pc_states;
    drop(store);

    // Reopen after a SIGKILL: a writer child commits batches into this database and is
    // killed while it writes; then time the open.
    let (reopen_ms, repaired) = reopen_after_kill(data, args.pcs)?;
    let file_bytes = std::fs::metadata(path).map_or(0, |m| m.len());
    let (p50, p99, max) = (
        percentile(&ms, 50.0),
        percentile(&ms, 99.0),
        percentile(&ms, 100.0),
    );
    println!(
        "save_batch of {} PC states, {} batches: p50 {p50:.2} ms  p99 {p99:.2} ms  max {max:.2} ms",
        args.pcs, args.batches
    );
    println!(
        "reopen after SIGKILL with {pc_states} PC states: {reopen_ms:.1} ms (full repair: {repaired}); file {file_bytes} bytes"
    );
    if args.json {
        println!(
            "{}",
            json!({
                "pcs": args.pcs,
                "batches": args.batches,
                "save_batch_ms": {"p50": round3(p50), "p99": round3(p99), "max": round3(max)},
                "reopen_ms": round3(reopen_ms),
                "file_bytes": file_bytes,
                "pc_states": pc_states,
                "repaired": repaired,
            })
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn reopen_after_kill(data: &Path, pcs: usize) -> anyhow::Result<(f64, bool)> {
    let exe = std::env::current_exe()?;
    let mut child = Command::new(exe)
        .arg("db")
        .arg("--data")
        .arg(data)
        .args(["writer", "--prefix", "bench", "--scenes", "1", "--pcs"])
        .arg(pcs.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .context("starting the writer child")?;
    // Kill it while it writes: after its second commit, so a third is under way. Whatever
    // happens while reading, the child is killed before this returns.
    let commits = child
        .stdout
        .take()
        .context("child stdout")
        .and_then(|stdout| {
            let mut commits = 0;
            for line in std::io::BufReader::new(stdout).lines() {
                if line?.starts_with("COMMITTED") {
                    commits += 1;
                    if commits == 2 {
                        break;
                    }
                }
            }
            Ok(commits)
        });
    child.kill()?;
    child.wait()?;
    if commits? < 2 {
        bail!("the writer child exited before committing");
    }
    let started = Instant::now();
    let store = Store::open_existing(data.join(DB_FILE))?;
    let ms = started.elapsed().as_secs_f64() * 1e3;
    Ok((ms, store.was_repaired()))
}

fn bench_verify(data: &Path, path: &Path, n: usize, json: bool) -> anyhow::Result<ExitCode> {
    let store = Arc::new(open_or_create(data, path)?);
    let email = "verify-bench@tessera.invalid";
    let password = "verify-bench-password";
    if store.account_by_email(email).is_err() {
        store.register(email, password, None)?;
    }
    let cap = store.hasher().cap();
    let started = Instant::now();
    let threads: Vec<_> = (0..cap)
        .map(|t| {
            let store = Arc::clone(&store);
            let count = n / cap + usize::from(t < n % cap);
            std::thread::spawn(move || -> anyhow::Result<Vec<f64>> {
                let mut ms = Vec::with_capacity(count);
                for _ in 0..count {
                    let s = Instant::now();
                    store.verify_password(email, password)?;
                    ms.push(s.elapsed().as_secs_f64() * 1e3);
                }
                Ok(ms)
            })
        })
        .collect();
    let mut ms = Vec::with_capacity(n);
    for t in threads {
        match t.join() {
            Ok(r) => ms.extend(r?),
            Err(_) => bail!("a verify thread panicked"),
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    ms.sort_by(f64::total_cmp);
    let per_s = ms.len() as f64 / elapsed;
    let peak = store.hasher().peak_in_flight();
    let rss = peak_rss_kib();
    println!(
        "{} verifications at cap {cap}: {per_s:.1}/s, p50 {:.1} ms, peak in flight {peak}, peak RSS {} KiB",
        ms.len(),
        percentile(&ms, 50.0),
        rss.map_or("?".to_string(), |r| r.to_string())
    );
    if json {
        println!(
            "{}",
            json!({
                "verify": ms.len(),
                "cap": cap,
                "per_s": round3(per_s),
                "verify_ms": {"p50": round3(percentile(&ms, 50.0)), "p99": round3(percentile(&ms, 99.0)), "max": round3(percentile(&ms, 100.0))},
                "peak_in_flight": peak,
                "peak_rss_kib": rss,
            })
        );
    }
    Ok(ExitCode::SUCCESS)
}
