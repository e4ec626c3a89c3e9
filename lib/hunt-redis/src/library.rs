//! Loading the `hunt` Functions library and calling it.
//!
//! A Redis restarted without its data has lost every function, so each caller goes through
//! [`call`] (or [`pipeline`]), which reloads the library on `Function not found` and retries
//! once: the one reload-and-retry of the workspace.
//!
//! Design constraints:
//! - Loading is idempotent: `FUNCTION LOAD REPLACE` of the same source changes nothing.
//! - An older process never replaces a newer library: [`ensure_loaded`] compares
//!   `hunt_version` with [`LIBRARY_VERSION`] and loads only when Redis has none or an older one.

use leaderboard_proto::functions::{Function, LIBRARY, LIBRARY_VERSION, Version};
use redis::aio::ConnectionLike;
use redis::{Cmd, FromRedisValue, RedisError, RedisResult};

use crate::connection::Primaries;

/// Whether `err` says that a function (and so the library) is missing from Redis.
#[must_use]
pub fn is_function_missing(err: &RedisError) -> bool {
    err.detail()
        .is_some_and(|detail| detail.contains("Function not found"))
        || err.to_string().contains("Function not found")
}

/// Loads the library on every primary that holds no library or an older one. A single Redis
/// is its only primary; on a cluster each primary keeps its own library, so each is checked.
///
/// # Errors
/// The Redis error when Redis cannot be reached or refuses the library.
pub async fn ensure_loaded<C: Primaries>(conn: &mut C) -> RedisResult<()> {
    let versions = conn.query_each_primary(Version::new().cmd()).await?;
    for (node, version) in versions {
        let loaded = version.and_then(|value| Ok(i64::from_redis_value(value)?));
        match loaded {
            Ok(version) if version >= LIBRARY_VERSION => {}
            Ok(_) => load_on(conn, &node).await?,
            Err(err) if is_function_missing(&err) => load_on(conn, &node).await?,
            Err(err) => return Err(err),
        }
    }
    Ok(())
}

/// `FUNCTION LOAD REPLACE` of the library.
fn load_cmd() -> Cmd {
    let mut cmd = redis::cmd("FUNCTION");
    cmd.arg("LOAD").arg("REPLACE").arg(LIBRARY);
    cmd
}

/// Loads the library on the primary at `node` (as [`Primaries::query_each_primary`] names it).
async fn load_on<C: Primaries>(conn: &mut C, node: &str) -> RedisResult<()> {
    let reply = conn.query_primary(node, &load_cmd()).await?;
    let _name: String = redis::from_redis_value(reply.extract_error()?)?;
    Ok(())
}

/// Loads (or replaces) the library unconditionally, on every primary (redis-rs sends
/// `FUNCTION LOAD` to every primary of a cluster).
///
/// # Errors
/// The Redis error when Redis cannot be reached or refuses the library.
pub async fn load<C: ConnectionLike + Send>(conn: &mut C) -> RedisResult<()> {
    let _name: String = load_cmd().query_async(conn).await?;
    Ok(())
}

/// Runs `pipe` (of library calls); when Redis has lost the library,
/// loads it where it is missing and runs the whole pipeline once more. Only for pipelines whose
/// every call may safely run twice (idempotent functions).
///
/// # Errors
/// The Redis error of the pipeline, or of the reload.
pub async fn pipeline<T: FromRedisValue, C: Primaries>(
    conn: &mut C,
    pipe: &redis::Pipeline,
) -> RedisResult<T> {
    match pipe.query_async(conn).await {
        Err(err) if is_function_missing(&err) => {
            ensure_loaded(conn).await?;
            pipe.query_async(conn).await
        }
        other => other,
    }
}

/// Runs `pipe` (of library calls) with every command's reply or error on its own (the pipeline
/// is sent with `ignore_errors`); when any command found the library missing, loads it and runs
/// the whole pipeline once more. Only for pipelines whose every call may safely run twice.
///
/// # Errors
/// The Redis error when the pipeline as a whole fails, or the reload does.
pub async fn pipeline_each<T: FromRedisValue, C: Primaries>(
    conn: &mut C,
    pipe: &redis::Pipeline,
) -> RedisResult<Vec<RedisResult<T>>> {
    let mut pipe = pipe.clone();
    pipe.ignore_errors();
    let replies: Vec<RedisResult<T>> = pipe.query_async(conn).await?;
    if replies
        .iter()
        .any(|reply| reply.as_ref().is_err_and(is_function_missing))
    {
        ensure_loaded(conn).await?;
        return pipe.query_async(conn).await;
    }
    Ok(replies)
}

/// Calls `function`; when Redis (on a cluster: the primary the call was routed to) has lost
/// the library, loads it where it is missing and calls once more.
///
/// # Errors
/// The Redis error of the call (a library error code is read with
/// `leaderboard_proto::functions::ErrorCode::of`), or of the reload.
pub async fn call<F: Function, C: Primaries>(conn: &mut C, function: &F) -> RedisResult<F::Reply> {
    let cmd = function.cmd();
    match cmd.query_async(conn).await {
        Err(err) if is_function_missing(&err) => {
            ensure_loaded(conn).await?;
            cmd.query_async(conn).await
        }
        other => other,
    }
}
