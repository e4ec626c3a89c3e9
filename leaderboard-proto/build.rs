//! Build script of `leaderboard-proto`.
//!
//! 1. Compiles every `.proto` file under `proto/` with `protox` (pure Rust: no system `protoc`)
//!    into one file descriptor set.
//! 2. Generates the messages, gRPC servers and clients with `tonic-prost-build`.
//!    With the `json` feature, `pbjson-build` adds serde implementations in the proto3 JSON
//!    mapping (lowerCamelCase names, 64-bit integers as strings, default values written out).
//! 3. Writes the encoded descriptor set to `$OUT_DIR/hunt_descriptor.bin` for gRPC reflection.
//! 4. Parses the reward table `rewards/tiers.txtpb` (protobuf text format, `hunt.v1.RewardTable`)
//!    against the same descriptors, validates it, and writes `$OUT_DIR/rewards.rs`: the tier
//!    constants of `leaderboard_proto::rewards`. An invalid table fails the build with a list of
//!    every problem found.

use std::collections::HashSet;
use std::error::Error;
use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};

use prost_reflect::{DescriptorPool, DynamicMessage, ReflectMessage as _, Value};

/// Folder holding the `.proto` files; also the include path, so imports read `hunt/v1/...`.
const PROTO_DIR: &str = "proto";
/// The reward table, relative to the crate root.
const REWARD_TABLE: &str = "rewards/tiers.txtpb";
/// Fully qualified name of the reward table's message.
const REWARD_TABLE_MESSAGE: &str = "hunt.v1.RewardTable";
/// The Lua library's source, with `{{NAME}}` placeholders for limits.
const LUA_LIBRARY: &str = "lua/hunt.lua";

/// The contract's limits, shared with the crate: the reward table is checked against them and
/// the Lua library gets them written in.
#[allow(dead_code, unreachable_pub)]
mod limits {
    include!("src/limits.rs");
}
use limits::MAX_POINTS;

type BuildResult<T> = Result<T, Box<dyn Error>>;

fn main() {
    if let Err(error) = run() {
        eprintln!("error: {error}");
        std::process::exit(1);
    }
}

fn run() -> BuildResult<()> {
    println!("cargo:rerun-if-changed={PROTO_DIR}");
    println!("cargo:rerun-if-changed={REWARD_TABLE}");
    println!("cargo:rerun-if-changed={LUA_LIBRARY}");
    println!("cargo:rerun-if-changed=src/limits.rs");

    let manifest_dir = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?);
    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);
    let proto_dir = manifest_dir.join(PROTO_DIR);

    let proto_files = proto_files(&proto_dir)?;
    let mut compiler = protox::Compiler::new([&proto_dir])?;
    compiler.include_imports(true).include_source_info(true);
    compiler
        .open_files(&proto_files)
        .map_err(|error| format!("compiling {}: {error}", proto_dir.display()))?;

    fs::write(
        out_dir.join("hunt_descriptor.bin"),
        compiler.encode_file_descriptor_set(),
    )?;

    // No transport: the contract compiles no HTTP/2 stack; servers and clients bring their own.
    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        .build_transport(false)
        .compile_fds(compiler.file_descriptor_set())?;
    #[cfg(feature = "json")]
    pbjson_build::Builder::new()
        .register_descriptors(&compiler.encode_file_descriptor_set())?
        .out_dir(&out_dir)
        .emit_fields()
        .build(&[".hunt.v1"])?;

    let pool = compiler.descriptor_pool();
    let table_path = manifest_dir.join(REWARD_TABLE);
    let tiers = reward_table(&pool, &table_path)?;
    fs::write(out_dir.join("rewards.rs"), rewards_source(&tiers))?;

    let lua = fs::read_to_string(manifest_dir.join(LUA_LIBRARY))
        .map_err(|error| format!("reading {LUA_LIBRARY}: {error}"))?;
    fs::write(out_dir.join("hunt.lua"), lua_source(&lua)?)?;
    Ok(())
}

/// The Lua library with every `{{NAME}}` placeholder replaced by the limit of that name; a
/// placeholder naming no limit fails the build.
fn lua_source(template: &str) -> BuildResult<String> {
    let values = [
        ("MAX_POINTS", limits::MAX_POINTS.to_string()),
        ("MEMBER_ORDER_WIDTH", limits::MEMBER_ORDER_WIDTH.to_string()),
    ];
    let mut source = template.to_owned();
    for (name, value) in &values {
        source = source.replace(&format!("{{{{{name}}}}}"), value);
    }
    if let Some(at) = source.find("{{") {
        let rest = &source[at..];
        let placeholder = rest.split("}}").next().unwrap_or(rest);
        return Err(format!("{LUA_LIBRARY}: unknown placeholder {placeholder}}}}}").into());
    }
    Ok(source)
}

/// The `.proto` files under `dir`, as names relative to it (`hunt/v1/events.proto`), sorted so
/// the generated code does not depend on directory order.
fn proto_files(dir: &Path) -> BuildResult<Vec<PathBuf>> {
    fn walk(root: &Path, dir: &Path, found: &mut Vec<PathBuf>) -> BuildResult<()> {
        for entry in fs::read_dir(dir)? {
            let path = entry?.path();
            if path.is_dir() {
                walk(root, &path, found)?;
            } else if path.extension().is_some_and(|ext| ext == "proto") {
                found.push(path.strip_prefix(root)?.to_path_buf());
            }
        }
        Ok(())
    }
    let mut found = Vec::new();
    walk(dir, dir, &mut found)?;
    found.sort();
    if found.is_empty() {
        return Err(format!("no .proto files under {}", dir.display()).into());
    }
    Ok(found)
}

/// One tier of the reward table, as read from the text file.
struct TierDefinition {
    id: u32,
    name: String,
    point_multiplier: u32,
    chest_types: Vec<ChestDefinition>,
}

/// One chest type of a tier.
struct ChestDefinition {
    name: String,
    points: i64,
}

/// Parses and validates the reward table.
fn reward_table(pool: &DescriptorPool, path: &Path) -> BuildResult<Vec<TierDefinition>> {
    let descriptor = pool
        .get_message_by_name(REWARD_TABLE_MESSAGE)
        .ok_or_else(|| format!("{REWARD_TABLE_MESSAGE} is not defined by the .proto files"))?;
    let text = fs::read_to_string(path)
        .map_err(|error| format!("reading reward table {}: {error}", path.display()))?;
    let table = DynamicMessage::parse_text_format(descriptor, &text)
        .map_err(|error| format!("parsing reward table {}: {error}", path.display()))?;

    let mut tiers = Vec::new();
    for tier in &list(&table, "tiers")? {
        let tier = message(tier, "tiers")?;
        let mut chest_types = Vec::new();
        for chest in &list(tier, "chest_types")? {
            let chest = message(chest, "chest_types")?;
            chest_types.push(ChestDefinition {
                name: string(chest, "name")?,
                points: scalar(chest, "points", Value::as_i64)?,
            });
        }
        tiers.push(TierDefinition {
            id: scalar(tier, "id", Value::as_u32)?,
            name: string(tier, "name")?,
            point_multiplier: scalar(tier, "point_multiplier", Value::as_u32)?,
            chest_types,
        });
    }

    let problems = problems(&tiers);
    if problems.is_empty() {
        Ok(tiers)
    } else {
        Err(format!(
            "invalid reward table {}:\n  - {}",
            path.display(),
            problems.join("\n  - ")
        )
        .into())
    }
}

/// Every rule the reward table breaks, one message each; empty when it is valid.
fn problems(tiers: &[TierDefinition]) -> Vec<String> {
    let mut problems = Vec::new();
    if tiers.is_empty() {
        problems.push("the table defines no tier: at least one is required".to_owned());
    }
    let mut ids = HashSet::new();
    for (index, tier) in tiers.iter().enumerate() {
        let label = format!("tier #{} (id {}, {:?})", index + 1, tier.id, tier.name);
        if tier.id < 1 {
            problems.push(format!("{label}: id must be 1 or more"));
        }
        if !ids.insert(tier.id) {
            problems.push(format!(
                "{label}: id {} is used by an earlier tier",
                tier.id
            ));
        }
        if tier.name.trim().is_empty() {
            problems.push(format!("{label}: name must not be empty"));
        }
        if tier.point_multiplier < 1 {
            problems.push(format!(
                "{label}: point_multiplier is {}: it must be 1 or more",
                tier.point_multiplier
            ));
        }
        let mut chest_names = HashSet::new();
        for chest in &tier.chest_types {
            if chest.name.trim().is_empty() {
                problems.push(format!("{label}: a chest type has an empty name"));
            } else if !chest_names.insert(chest.name.as_str()) {
                problems.push(format!(
                    "{label}: chest type {:?} is defined twice",
                    chest.name
                ));
            }
            if !(1..=MAX_POINTS).contains(&chest.points) {
                problems.push(format!(
                    "{label}: chest type {:?} is worth {} points: it must be worth 1 to {MAX_POINTS}",
                    chest.name, chest.points
                ));
            }
        }
    }
    problems
}

/// The Rust source of the tier constants, included by `src/rewards.rs`.
fn rewards_source(tiers: &[TierDefinition]) -> String {
    // `{:?}` of a `str` is a valid Rust string literal, escapes included.
    let mut source = String::from(
        "/// Every tier of the reward table (`rewards/tiers.txtpb`), in table order.\n\
         pub const TIERS: &[Tier] = &[\n",
    );
    for tier in tiers {
        let _ = writeln!(
            source,
            "    Tier {{\n        id: {},\n        name: {:?},\n        point_multiplier: {},\n        chest_types: &[",
            tier.id, tier.name, tier.point_multiplier
        );
        for chest in &tier.chest_types {
            let _ = writeln!(
                source,
                "            ChestType {{ name: {:?}, points: {} }},",
                chest.name, chest.points
            );
        }
        source.push_str("        ],\n    },\n");
    }
    source.push_str("];\n");
    source
}

fn field<'a>(message: &'a DynamicMessage, name: &str) -> BuildResult<std::borrow::Cow<'a, Value>> {
    message
        .get_field_by_name(name)
        .ok_or_else(|| format!("{} has no field {name:?}", message.descriptor().full_name()).into())
}

fn list(message: &DynamicMessage, name: &str) -> BuildResult<Vec<Value>> {
    let value = field(message, name)?;
    value
        .as_list()
        .map(<[Value]>::to_vec)
        .ok_or_else(|| format!("field {name:?} is not a repeated field").into())
}

fn message<'a>(value: &'a Value, name: &str) -> BuildResult<&'a DynamicMessage> {
    value
        .as_message()
        .ok_or_else(|| format!("field {name:?} does not hold messages").into())
}

fn string(message: &DynamicMessage, name: &str) -> BuildResult<String> {
    let value = field(message, name)?;
    value
        .as_str()
        .map(str::to_owned)
        .ok_or_else(|| format!("field {name:?} is not a string").into())
}

fn scalar<T>(message: &DynamicMessage, name: &str, get: fn(&Value) -> Option<T>) -> BuildResult<T> {
    let value = field(message, name)?;
    get(&value).ok_or_else(|| format!("field {name:?} has an unexpected type").into())
}
