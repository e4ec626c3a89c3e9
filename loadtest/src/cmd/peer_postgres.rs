//! `loadtest peer-postgres`: the workload of `loadtest run`, then the naive way, then the same
//! offered load on the machine's PostgreSQL the way the game first tried, all three reported
//! side by side.
//!
//! The PostgreSQL way, per event: one transaction (one statement) inserting the event and
//! upserting the player's score; the top 100 of a tier read from an index on
//! `(tier, score DESC)`. `--postgres-clients` connections share the writes (at most one
//! transaction each at a time), four more serve the top-100 reads at `--get-top-rate`.
//! Durability is PostgreSQL's own (`synchronous_commit` as the server has it: on by default).
//! Arrivals are open-loop at `--rate`, timed from their intended time, as for the pipeline; an
//! event is visible to readers when its transaction commits, so its end-to-end time is its
//! commit time.
//!
//! Design constraints:
//! - A private database (`hunt_peer_<pid>_<ms>`) is created for the run and dropped after it,
//!   whatever the run came to; nothing else on the server is touched.
//! - Connections are bounded: `--postgres-clients` (≤ 64) plus four readers.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use tokio_postgres::{Client, Config, NoTls, Statement};

use crate::cmd::baseline;
use crate::harness::hunt::{self, Draw, hunters_of};
use crate::harness::open_loop;
use crate::harness::report::{Baseline, Latency};

/// Options of `loadtest peer-postgres`.
#[derive(Debug, clap::Args)]
#[group(id = "peer_postgres")]
pub(crate) struct Args {
    #[command(flatten)]
    peers: baseline::Args,
    /// The PostgreSQL server, as a libpq connection string or URL; the user must be allowed to
    /// create databases.
    #[arg(
        long,
        env = "HUNT_POSTGRES_URL",
        default_value = "host=127.0.0.1 port=5432 user=postgres dbname=postgres"
    )]
    postgres_url: String,
    /// Connections writing events (each one transaction at a time).
    #[arg(long, default_value_t = 32, value_parser = clap::value_parser!(u32).range(1..=64))]
    postgres_clients: u32,
}

/// Connections serving the top-100 reads.
const READERS: usize = 4;

/// `loadtest peer-postgres`: the hunt, the naive run and the PostgreSQL run, side by side.
///
/// # Errors
/// When a part cannot be started or reached, a report cannot be written, or a check failed.
pub(crate) async fn run(args: Args) -> anyhow::Result<()> {
    let hunt = &args.peers.hunt;
    let mut report = hunt::execute(hunt).await?;
    report.baseline = Some(baseline::naive(hunt, args.peers.baseline_seconds).await?);
    report.postgres = Some(postgres(&args).await?);
    report.finish(&hunt.json, &hunt.svg, hunt.fail_on_goal)
}

/// The PostgreSQL run in a private database, dropped afterwards whatever the run came to.
async fn postgres(args: &Args) -> anyhow::Result<Baseline> {
    let config: Config = args
        .postgres_url
        .parse()
        .context("--postgres-url is not a PostgreSQL connection string")?;
    let admin = connect(&config).await.context("connecting to PostgreSQL")?;
    let database = format!(
        "hunt_peer_{}_{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis())
    );
    admin
        .batch_execute(&format!("CREATE DATABASE {database}"))
        .await
        .context("creating the run's database")?;
    let mut private = config.clone();
    private.dbname(&database);
    let outcome = measure(args, &private).await;
    let dropped = admin
        .batch_execute(&format!("DROP DATABASE IF EXISTS {database} WITH (FORCE)"))
        .await;
    let measured = outcome?;
    dropped.with_context(|| format!("dropping the run's database {database}"))?;
    Ok(measured)
}

/// Opens a connection with `config`, its driver on a task of its own.
async fn connect(config: &Config) -> anyhow::Result<Client> {
    let (client, connection) = config.connect(NoTls).await?;
    tokio::spawn(async move {
        if let Err(err) = connection.await {
            tracing::debug!(error = %err, "a PostgreSQL connection ended");
        }
    });
    Ok(client)
}

/// The idle writers, each with its statement, lent one per transaction.
type Writers = Mutex<Vec<(Client, Statement)>>;

/// The schema, the open-loop writes with the top-100 reads beside them, and the figures.
async fn measure(args: &Args, config: &Config) -> anyhow::Result<Baseline> {
    let setup = connect(config).await?;
    setup
        .batch_execute(
            "CREATE TABLE events (
                 id bigserial PRIMARY KEY,
                 tier integer NOT NULL,
                 player text NOT NULL,
                 points bigint NOT NULL,
                 recorded_at timestamptz NOT NULL DEFAULT now());
             CREATE TABLE scores (
                 tier integer NOT NULL,
                 player text NOT NULL,
                 score bigint NOT NULL,
                 PRIMARY KEY (tier, player));
             CREATE INDEX scores_top ON scores (tier, score DESC);",
        )
        .await
        .context("creating the tables")?;
    let upsert_sql = "WITH event AS (
             INSERT INTO events (tier, player, points) VALUES ($1, $2, $3))
         INSERT INTO scores (tier, player, score) VALUES ($1, $2, $3)
         ON CONFLICT (tier, player) DO UPDATE SET score = scores.score + EXCLUDED.score";
    let mut idle = Vec::with_capacity(args.postgres_clients as usize);
    for _ in 0..args.postgres_clients {
        let client = connect(config).await?;
        // A prepared statement belongs to its connection.
        let upsert = client.prepare(upsert_sql).await?;
        idle.push((client, upsert));
    }
    let writers: Arc<Writers> = Arc::new(Mutex::new(idle));
    let mut readers = Vec::with_capacity(READERS);
    for _ in 0..READERS {
        readers.push(Arc::new(connect(config).await?));
    }

    let hunters: Arc<Vec<(String, u32, i64)>> = Arc::new(
        (0..args.peers.hunt.shards)
            .flat_map(|index| hunters_of(index, args.peers.hunt.shards, args.peers.hunt.hunters))
            .map(|(player, tier)| (player, tier.id, i64::from(tier.point_multiplier)))
            .collect(),
    );
    let duration = Duration::from_secs(args.peers.baseline_seconds);
    let seed = args.peers.hunt.seed;
    let reads = (args.peers.hunt.get_top_rate > 0).then(|| {
        let readers = readers.clone();
        tokio::spawn(open_loop::run(
            args.peers.hunt.get_top_rate,
            duration,
            READERS * 16,
            move |n| {
                let reader = Arc::clone(&readers[n as usize % READERS]);
                async move {
                    let tier = 1 + (n % 5) as i32;
                    reader
                        .query(
                            "SELECT player, score FROM scores WHERE tier = $1
                             ORDER BY score DESC LIMIT 100",
                            &[&tier],
                        )
                        .await?;
                    Ok(())
                }
            },
        ))
    });
    let started = Instant::now();
    let writes = open_loop::run(
        args.peers.hunt.rate,
        duration,
        args.postgres_clients as usize,
        move |n| {
            let (writers, hunters) = (Arc::clone(&writers), Arc::clone(&hunters));
            async move {
                let mut draw = Draw::new(seed, 0, n);
                let (player, tier, multiplier) = hunters
                    .get(draw.below(hunters.len() as u64) as usize)
                    .context("hunter")?;
                let points = (draw.below(50) as i64 + 1) * multiplier;
                let tier = i32::try_from(*tier)?;
                // At most `--postgres-clients` run at once: one writer is always idle here.
                let (client, upsert) = writers
                    .lock()
                    .map_err(|_| anyhow::anyhow!("poisoned"))?
                    .pop()
                    .context("no idle writer")?;
                let done = client.execute(&upsert, &[&tier, player, &points]).await;
                if let Ok(mut idle) = writers.lock() {
                    idle.push((client, upsert));
                }
                done?;
                Ok(())
            }
        },
    )
    .await?;
    let committed_in = started.elapsed();
    let get_top = match reads {
        Some(reads) => Some(Latency::of(&reads.await??.latency)),
        None => None,
    };
    let committed = writes.latency.len();
    Ok(Baseline {
        seconds: writes.elapsed.as_secs_f64(),
        committed_per_s: committed as f64 / duration.as_secs_f64(),
        applied_per_s: committed as f64 / committed_in.as_secs_f64(),
        append: Latency::of(&writes.latency),
        end_to_end: Latency::of(&writes.latency),
        get_top,
    })
}
