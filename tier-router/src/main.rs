//! tier-router: consumes tier streams and serves leaderboards.
//!
//! The service itself is not built yet; this binary reports its version.

fn main() {
    println!("tier-router {}", env!("CARGO_PKG_VERSION"));
}
