//! The tier router of hunt-pipeline: owns tiers under fenced leases, applies their streams to
//! the leaderboards exactly once, keeps each tier's top in memory, and serves it over gRPC.
#![forbid(unsafe_code)]

mod app;
pub mod apply;
pub mod cache;
pub mod config;
pub mod grpc;
mod http;
pub mod lease;
pub mod members;
pub mod metrics;
pub mod saga;
mod worker;
pub mod ws;

pub use app::{App, AppHandle, StartError};
pub use config::{Failpoint, RouterConfig, WsLimits};
