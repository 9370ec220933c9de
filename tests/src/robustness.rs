//! Randomised bad-input runs against a real server: malformed, boundary and
//! oversized requests to every RPC of a service, each of which must get a
//! clear status.
//!
//! The requests are built from the API's own descriptor set
//! ([`bowtie_proto::FILE_DESCRIPTOR_SET`]), not from hand-written cases, so
//! every RPC a service declares is covered, including ones added later, and
//! every field of every request gets hostile values: empty, blank and
//! garbage ids, SQL metacharacters, quotes, NUL and other control
//! characters, unicode, huge strings, negative and extreme numbers, NaN,
//! unknown enum values, timestamps and durations out of range, nanos out of
//! range, page sizes 0 / -1 / huge, bad page tokens and wrong currency codes.
//! A few requests are corrupted on the wire (truncated or with flipped
//! bytes). Valid values the scenario supplies (existing ids) are mixed in, so
//! requests also get past validation and reach the database.
//!
//! Every request is generated from `seed` and its index alone, so a failure
//! names both and [`SEED_VAR`] replays the run. A run asserts, per request:
//! no INTERNAL, no UNKNOWN, no dropped connection (which a panicking handler
//! causes), a status from the documented set, and an INVALID_ARGUMENT that
//! carries a `google.rpc.BadRequest` field violation naming a field of the
//! request.

use std::collections::{BTreeSet, HashMap};
use std::time::Duration;

use anyhow::Context as _;
use bytes::{Buf, BufMut};
use futures::StreamExt as _;
use prost::Message as _;
use prost::encoding::{WireType, encode_key, encode_varint};
use prost_types::{DescriptorProto, FileDescriptorSet, field_descriptor_proto::Type};
use tonic::Code;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::metadata::MetadataValue;
use tonic::transport::Channel;
use tonic_types::StatusExt as _;

pub mod rest;

/// Environment variable: requests per service in a run (default [`DEFAULT_REQUESTS`]).
pub const REQUESTS_VAR: &str = "BOWTIE_ROBUSTNESS_REQUESTS";
/// Environment variable: the seed of a run (default [`DEFAULT_SEED`]).
pub const SEED_VAR: &str = "BOWTIE_ROBUSTNESS_SEED";
/// Requests per service when [`REQUESTS_VAR`] is unset: enough to reach every
/// RPC many times, few enough for `make test`.
pub const DEFAULT_REQUESTS: usize = 2_500;
/// The seed when [`SEED_VAR`] is unset, so `make test` is reproducible.
pub const DEFAULT_SEED: u64 = 0x00b0_771e;
/// Requests in flight at once.
const CONCURRENCY: usize = 8;
/// Longest a single call may take: beyond it the server is considered hung.
const CALL_TIMEOUT: Duration = Duration::from_secs(20);
/// How long a server stream is read before the call is dropped.
const STREAM_READ: Duration = Duration::from_millis(100);
/// Largest generated request: well below the servers' message size limit.
pub const MAX_REQUEST_BYTES: usize = 1 << 20;
/// Deepest nesting of generated messages.
const MAX_DEPTH: usize = 4;

/// The statuses a request may get: the documented, clear ones.
pub const CLEAR_CODES: [Code; 7] = [
    Code::Ok,
    Code::InvalidArgument,
    Code::NotFound,
    Code::AlreadyExists,
    Code::Aborted,
    Code::FailedPrecondition,
    Code::ResourceExhausted,
];

/// A small deterministic generator (SplitMix64): the same seed gives the
/// same requests on every machine.
///
/// It also carries how hostile the current request is: a request made of
/// nothing but hostile values is rejected at the first field, so some
/// requests are mostly plausible (valid ids, small numbers, known enum
/// values, recent times) with a few hostile values, which reach the
/// storage and domain code.
#[derive(Debug, Clone)]
pub struct Rng {
    state: u64,
    hostile_percent: u64,
}

impl Rng {
    /// A generator for `seed`, fully hostile.
    pub fn new(seed: u64) -> Self {
        Self {
            state: seed,
            hostile_percent: 100,
        }
    }

    /// Sets the share of values (percent) that are hostile.
    pub fn set_hostility(&mut self, percent: u64) {
        self.hostile_percent = percent;
    }

    /// Whether the next value should be hostile.
    pub fn hostile(&mut self) -> bool {
        let p = self.hostile_percent;
        self.percent(p)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A number in `0..n` (`n` > 0).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n.max(1) as u64) as usize
    }

    /// True with probability `percent` / 100.
    pub fn percent(&mut self, percent: u64) -> bool {
        self.next_u64() % 100 < percent
    }

    /// One of `items` (not empty).
    pub fn pick<T: Clone>(&mut self, items: &[T]) -> T {
        items[self.below(items.len())].clone()
    }
}

/// How many requests a run sends per service: [`REQUESTS_VAR`] or the default.
pub fn requests_per_service() -> usize {
    std::env::var(REQUESTS_VAR)
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(DEFAULT_REQUESTS)
}

/// The seed of a run: [`SEED_VAR`] or the default.
pub fn seed() -> u64 {
    std::env::var(SEED_VAR)
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(DEFAULT_SEED)
}

/// One RPC as the descriptor set declares it.
#[derive(Debug, Clone)]
pub struct Method {
    /// `/package.Service/Method`, the HTTP/2 path.
    pub path: String,
    /// Full name of the request message, with a leading dot.
    pub input: String,
    /// The client sends a stream.
    pub client_streaming: bool,
    /// The server answers with a stream.
    pub server_streaming: bool,
}

/// The API's message and enum definitions, for generating requests.
pub struct Schema {
    services: HashMap<String, Vec<Method>>,
    messages: HashMap<String, DescriptorProto>,
    enums: HashMap<String, Vec<i32>>,
    field_names: Vec<String>,
    /// Seconds since the epoch when loaded: "recent" times are relative to
    /// it, so a seed gives the same requests throughout a run.
    now: i64,
}

impl Schema {
    /// Reads Bowtie's descriptor set.
    pub fn load() -> anyhow::Result<Self> {
        let set = FileDescriptorSet::decode(bowtie_proto::FILE_DESCRIPTOR_SET)
            .context("decoding the API descriptor set")?;
        let mut schema = Self {
            services: HashMap::new(),
            messages: HashMap::new(),
            enums: HashMap::new(),
            field_names: Vec::new(),
            now: chrono::Utc::now().timestamp(),
        };
        let mut names = BTreeSet::new();
        for file in &set.file {
            let package = format!(".{}", file.package());
            for service in &file.service {
                let full = format!("{}.{}", file.package(), service.name());
                let methods = service
                    .method
                    .iter()
                    .map(|m| Method {
                        path: format!("/{full}/{}", m.name()),
                        input: m.input_type().to_owned(),
                        client_streaming: m.client_streaming(),
                        server_streaming: m.server_streaming(),
                    })
                    .collect();
                schema.services.insert(full, methods);
            }
            for e in &file.enum_type {
                schema.enums.insert(
                    format!("{package}.{}", e.name()),
                    e.value.iter().map(|v| v.number()).collect(),
                );
            }
            for message in &file.message_type {
                schema.add_message(&package, message, &mut names);
            }
        }
        schema.field_names = names.into_iter().collect();
        Ok(schema)
    }

    fn add_message(
        &mut self,
        scope: &str,
        message: &DescriptorProto,
        names: &mut BTreeSet<String>,
    ) {
        let full = format!("{scope}.{}", message.name());
        for e in &message.enum_type {
            self.enums.insert(
                format!("{full}.{}", e.name()),
                e.value.iter().map(|v| v.number()).collect(),
            );
        }
        for nested in &message.nested_type {
            self.add_message(&full, nested, names);
        }
        for field in &message.field {
            names.insert(field.name().to_owned());
        }
        self.messages.insert(full, message.clone());
    }

    /// Every RPC of `service` (its full name, e.g. `bowtie.funnel.v1.FunnelService`).
    pub fn methods(&self, service: &str) -> anyhow::Result<&[Method]> {
        self.services
            .get(service)
            .map(Vec::as_slice)
            .with_context(|| format!("{service} is not in the descriptor set"))
    }

    /// The names of every field reachable from `message`, at any depth.
    pub fn reachable_fields(&self, message: &str) -> BTreeSet<String> {
        let mut out = BTreeSet::new();
        let mut todo = vec![message.to_owned()];
        let mut seen = BTreeSet::new();
        while let Some(name) = todo.pop() {
            if !seen.insert(name.clone()) {
                continue;
            }
            if let Some(m) = self.messages.get(&name) {
                for f in &m.field {
                    out.insert(f.name().to_owned());
                    out.insert(f.json_name().to_owned());
                    if f.r#type() == Type::Message {
                        todo.push(f.type_name().to_owned());
                    }
                }
            }
        }
        out
    }

    /// A random, encoded instance of `message`, below [`MAX_REQUEST_BYTES`]
    /// (the size limit has its own test).
    pub fn request(&self, rng: &mut Rng, message: &str, pool: &[String]) -> Vec<u8> {
        loop {
            let mut buf = Vec::new();
            self.encode_message(rng, message, pool, 0, &mut buf);
            if buf.len() <= MAX_REQUEST_BYTES {
                return buf;
            }
        }
    }

    fn encode_message(
        &self,
        rng: &mut Rng,
        message: &str,
        pool: &[String],
        depth: usize,
        buf: &mut Vec<u8>,
    ) {
        match message {
            ".google.protobuf.Timestamp" => return timestamp(rng, self.now, buf),
            ".google.protobuf.Duration" => return duration(rng, buf),
            ".google.protobuf.FieldMask" => return self.field_mask(rng, buf),
            _ => {}
        }
        let Some(descriptor) = self.messages.get(message) else {
            // An unknown type (Any and such): arbitrary bytes it must skip.
            return buf.extend(garbage(rng, 8));
        };
        for field in &descriptor.field {
            // Most fields present: enough to pass validation now and then.
            let hostile = rng.hostile();
            if !rng.percent(if hostile { 75 } else { 92 }) {
                continue;
            }
            let repeated = field.label() == prost_types::field_descriptor_proto::Label::Repeated;
            let count = if !repeated {
                1
            } else if !hostile {
                1 + rng.below(3)
            } else if rng.percent(3) {
                rng.pick(&[50, 300])
            } else {
                rng.below(4)
            };
            let tag = field.number() as u32;
            for _ in 0..count {
                match field.r#type() {
                    Type::Message | Type::Group => {
                        if depth >= MAX_DEPTH {
                            continue;
                        }
                        let mut inner = Vec::new();
                        self.encode_message(rng, field.type_name(), pool, depth + 1, &mut inner);
                        length_delimited(tag, &inner, buf);
                    }
                    Type::String => {
                        let s = text(rng, field.name(), pool);
                        length_delimited(tag, s.as_bytes(), buf);
                    }
                    Type::Bytes => length_delimited(tag, &garbage(rng, 64), buf),
                    Type::Enum => {
                        let known = self
                            .enums
                            .get(field.type_name())
                            .cloned()
                            .unwrap_or_default();
                        let valid: Vec<i32> = known.iter().copied().filter(|v| *v != 0).collect();
                        let value = if !hostile && !valid.is_empty() {
                            rng.pick(&valid)
                        } else if !known.is_empty() && rng.percent(75) {
                            rng.pick(&known)
                        } else {
                            rng.pick(&[-1, 99, 1_000, i32::MAX, i32::MIN])
                        };
                        varint(tag, value as i64 as u64, buf);
                    }
                    Type::Bool => varint(tag, rng.below(2) as u64, buf),
                    Type::Int32 | Type::Int64 | Type::Uint32 | Type::Uint64 => {
                        let value = if hostile {
                            integer(rng, field.r#type())
                        } else {
                            1 + rng.below(100) as u64
                        };
                        varint(tag, value, buf);
                    }
                    Type::Sint32 | Type::Sint64 => {
                        let v = integer(rng, Type::Int64) as i64;
                        varint(tag, ((v << 1) ^ (v >> 63)) as u64, buf);
                    }
                    Type::Double => {
                        encode_key(tag, WireType::SixtyFourBit, buf);
                        buf.put_f64_le(if hostile { real(rng) } else { 0.5 });
                    }
                    Type::Float => {
                        encode_key(tag, WireType::ThirtyTwoBit, buf);
                        buf.put_f32_le(real(rng) as f32);
                    }
                    Type::Fixed64 | Type::Sfixed64 => {
                        encode_key(tag, WireType::SixtyFourBit, buf);
                        buf.put_u64_le(integer(rng, Type::Int64));
                    }
                    Type::Fixed32 | Type::Sfixed32 => {
                        encode_key(tag, WireType::ThirtyTwoBit, buf);
                        buf.put_u32_le(integer(rng, Type::Int32) as u32);
                    }
                }
            }
        }
    }

    fn field_mask(&self, rng: &mut Rng, buf: &mut Vec<u8>) {
        for _ in 0..rng.below(4) {
            let path = if rng.percent(70) {
                rng.pick(&self.field_names)
            } else {
                rng.pick(&["", "*", "bogus", "name.first", "id", "' OR 1=1 --", "NAME"])
                    .to_owned()
            };
            length_delimited(1, path.as_bytes(), buf);
        }
    }
}

fn varint(tag: u32, value: u64, buf: &mut Vec<u8>) {
    encode_key(tag, WireType::Varint, buf);
    encode_varint(value, buf);
}

fn length_delimited(tag: u32, bytes: &[u8], buf: &mut Vec<u8>) {
    encode_key(tag, WireType::LengthDelimited, buf);
    encode_varint(bytes.len() as u64, buf);
    buf.extend_from_slice(bytes);
}

fn garbage(rng: &mut Rng, max: usize) -> Vec<u8> {
    (0..rng.below(max + 1))
        .map(|_| rng.next_u64() as u8)
        .collect()
}

/// Seconds of 2026-01-01T00:00:00Z: valid business times cluster around it.
const JAN_2026: i64 = 1_767_225_600;

fn timestamp(rng: &mut Rng, now: i64, buf: &mut Vec<u8>) {
    let hostile = rng.hostile();
    let seconds = if !hostile || rng.percent(50) {
        let recent = now - rng.below(400) as i64 * 86_400;
        let business = JAN_2026 + rng.below(900) as i64 * 86_400 - 365 * 86_400;
        rng.pick(&[recent, business])
    } else {
        rng.pick(&[
            0,
            -1,
            i64::MAX,
            i64::MIN,
            -62_135_596_801,
            -62_135_596_800,
            253_402_300_799,
            253_402_300_800,
            now + 10 * 365 * 86_400,
        ])
    };
    let nanos = if !hostile || rng.percent(80) {
        0
    } else {
        rng.pick(&[1, 999_999_999, 1_000_000_000, -1, i32::MAX, i32::MIN])
    };
    if seconds != 0 {
        varint(1, seconds as u64, buf);
    }
    if nanos != 0 {
        varint(2, nanos as i64 as u64, buf);
    }
}

fn duration(rng: &mut Rng, buf: &mut Vec<u8>) {
    if !rng.hostile() {
        return varint(1, rng.pick(&[86_400u64, 30 * 86_400, 90 * 86_400]), buf);
    }
    let seconds: i64 = rng.pick(&[
        0,
        1,
        -1,
        60,
        86_400,
        30 * 86_400,
        315_576_000_000,
        315_576_000_001,
        i64::MAX,
        i64::MIN,
    ]);
    let nanos: i32 = rng.pick(&[0, 0, 0, 1, -1, 999_999_999, 1_000_000_000, i32::MIN]);
    if seconds != 0 {
        varint(1, seconds as u64, buf);
    }
    if nanos != 0 {
        varint(2, nanos as i64 as u64, buf);
    }
}

fn integer(rng: &mut Rng, kind: Type) -> u64 {
    let small = rng.below(12) as i64;
    let value: i64 = match kind {
        Type::Int32 => rng.pick(&[
            0,
            1,
            -1,
            small,
            10,
            100,
            101,
            1_000,
            10_001,
            i32::MAX as i64,
            i32::MIN as i64,
        ]),
        Type::Uint32 => rng.pick(&[0, 1, small, 100, 10_001, u32::MAX as i64]),
        Type::Uint64 => rng.pick(&[0, 1, small, 100, i64::MAX, -1]),
        _ => rng.pick(&[
            0,
            1,
            -1,
            small,
            100,
            9_999,
            10_000,
            10_001,
            1_000_000,
            1 << 53,
            i64::MAX,
            i64::MIN,
            i64::MAX / 12,
        ]),
    };
    value as u64
}

fn real(rng: &mut Rng) -> f64 {
    rng.pick(&[
        0.0,
        -0.0,
        0.5,
        1.0,
        -1.0,
        100.0,
        1e308,
        -1e308,
        f64::NAN,
        f64::INFINITY,
        f64::NEG_INFINITY,
        f64::MIN_POSITIVE,
    ])
}

/// A string for the field `name`: a known value from `pool` now and then,
/// otherwise something hostile, fitted to what the field looks like.
fn text(rng: &mut Rng, name: &str, pool: &[String]) -> String {
    let id_like = name.ends_with("id") || name.ends_with("ids") || name.ends_with("after");
    if !rng.hostile() {
        return plausible(rng, name, id_like, pool);
    }
    if !pool.is_empty() && rng.percent(if id_like { 55 } else { 10 }) {
        return rng.pick(pool);
    }
    if name.contains("currency") && rng.percent(70) {
        return rng
            .pick(&[
                "USD", "EUR", "GBP", "usd", "US", "USDD", "XXX", "", " USD", "€", "U'D",
            ])
            .to_owned();
    }
    if name.contains("month") && rng.percent(70) {
        return rng
            .pick(&[
                "2026-13", "2026-00", "0000-01", "9999-12", "2026-1", "26-01", "2026/01",
                "-2026-01",
            ])
            .to_owned();
    }
    if name == "rate" && rng.percent(70) {
        return rng
            .pick(&[
                "0",
                "-1",
                "1e9",
                "NaN",
                "1.",
                ".5",
                "1,5",
                "99999999999999999999.123456789",
                "0.0000000001",
            ])
            .to_owned();
    }
    if name.contains("token") && rng.percent(70) {
        return rng
            .pick(&[
                "", "bogus", "MTIz", "AAAA", "=", "eyJ9", "-1", "%00", "////",
            ])
            .to_owned();
    }
    if name.contains("email") && rng.percent(50) {
        return rng
            .pick(&["a@example.com", "not-an-email", "@", "a@", "x@y'z.com", ""])
            .to_owned();
    }
    if name.contains("idempotency") && rng.percent(60) {
        // Fresh keys write; reused ones hit the idempotency check.
        return if rng.percent(50) {
            format!("key-{}", rng.next_u64())
        } else {
            format!("key-{}", rng.below(5))
        };
    }
    match rng.below(26) {
        0 => String::new(),
        1 => " ".into(),
        2 => "\t\n ".into(),
        3 => "not-a-uuid".into(),
        4 => "00000000-0000-0000-0000-000000000000".into(),
        5 => "ffffffff-ffff-ffff-ffff-ffffffffffff".into(),
        6 => "' OR 1=1 --".into(),
        7 => "'; DROP TABLE accounts; --".into(),
        8 => "%".into(),
        9 => "_".into(),
        10 => "a%' OR name LIKE '%".into(),
        11 => "\\".into(),
        12 => "\"quoted\" 'single'".into(),
        13 => "\u{0}".into(),
        14 => "nul\u{0}inside".into(),
        15 => "\u{7}\u{1b}[31m".into(),
        16 => "émile_ñ 東京 🦀".into(),
        17 => "\u{202e}rtl\u{feff}".into(),
        18 => "x".repeat(5_000),
        19 => "y".repeat(if rng.percent(20) { 200_000 } else { 300 }),
        20 => "-1".into(),
        21 => "99999999999999999999999".into(),
        22 => "$1; SELECT pg_sleep(1)".into(),
        23 => format!("name-{}", rng.below(1_000)),
        24 => rng
            .pick(&[
                "price",
                "competitor",
                "ana",
                "salesforce",
                "hubspot",
                "logins",
            ])
            .into(),
        _ => format!("{:x}", rng.next_u64()),
    }
}

/// A value a well-behaved client could send for the field `name`.
fn plausible(rng: &mut Rng, name: &str, id_like: bool, pool: &[String]) -> String {
    if id_like && !pool.is_empty() && !name.contains("external") {
        return rng.pick(pool);
    }
    if name.contains("currency") {
        return rng.pick(&["USD", "EUR"]).to_owned();
    }
    if name.contains("month") {
        return rng
            .pick(&["2025-10", "2026-01", "2026-03", "2026-06"])
            .to_owned();
    }
    if name == "rate" {
        return rng.pick(&["1.08", "0.92", "1"]).to_owned();
    }
    if name.contains("token") {
        return String::new();
    }
    if name.contains("email") {
        return format!("person{}@example.com", rng.below(50));
    }
    if name.contains("idempotency") || name.contains("key") {
        return format!("key-{}", rng.next_u64());
    }
    if name.contains("url") {
        return "https://example.com/hook".to_owned();
    }
    let numbered = format!("name-{}", rng.below(100));
    rng.pick(&[
        "Acme".to_owned(),
        "price".to_owned(),
        "competitor".to_owned(),
        "ana@example.com".to_owned(),
        "hubspot".to_owned(),
        "pro".to_owned(),
        numbered,
    ])
}

/// Corrupts an encoded request: truncates it, flips a byte or appends junk.
fn corrupt(rng: &mut Rng, bytes: &mut Vec<u8>) {
    match rng.below(3) {
        0 if !bytes.is_empty() => {
            let keep = rng.below(bytes.len());
            bytes.truncate(keep);
        }
        1 if !bytes.is_empty() => {
            let at = rng.below(bytes.len());
            bytes[at] ^= 1 << rng.below(8);
        }
        _ => bytes.extend([0xff, 0xff, 0xff, 0xff, 0x0f]),
    }
}

/// A codec that sends and receives messages as raw bytes.
#[derive(Debug, Clone, Copy, Default)]
pub struct RawCodec;

impl Codec for RawCodec {
    type Encode = Vec<u8>;
    type Decode = Vec<u8>;
    type Encoder = RawCodec;
    type Decoder = RawCodec;

    fn encoder(&mut self) -> Self::Encoder {
        RawCodec
    }

    fn decoder(&mut self) -> Self::Decoder {
        RawCodec
    }
}

impl Encoder for RawCodec {
    type Item = Vec<u8>;
    type Error = tonic::Status;

    fn encode(&mut self, item: Vec<u8>, dst: &mut EncodeBuf<'_>) -> Result<(), tonic::Status> {
        dst.put_slice(&item);
        Ok(())
    }
}

impl Decoder for RawCodec {
    type Item = Vec<u8>;
    type Error = tonic::Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Vec<u8>>, tonic::Status> {
        let bytes = src.copy_to_bytes(src.remaining());
        Ok(Some(bytes.to_vec()))
    }
}

/// Sends `messages` to `method` with `key` and returns how the call ended:
/// the first error status, or OK.
pub async fn call(
    channel: Channel,
    key: &str,
    method: &Method,
    messages: Vec<Vec<u8>>,
) -> Result<(), tonic::Status> {
    let mut grpc = tonic::client::Grpc::new(channel)
        .max_decoding_message_size(64 << 20)
        .max_encoding_message_size(64 << 20);
    grpc.ready()
        .await
        .map_err(|e| tonic::Status::unavailable(format!("channel not ready: {e}")))?;
    let path: http::uri::PathAndQuery = method
        .path
        .parse()
        .map_err(|_| tonic::Status::internal("bad method path"))?;
    let bearer = MetadataValue::try_from(format!("Bearer {key}"))
        .map_err(|_| tonic::Status::internal("bad key"))?;
    let mut first = messages.into_iter();
    if !method.client_streaming {
        let mut request = tonic::Request::new(first.next().unwrap_or_default());
        request.metadata_mut().insert("authorization", bearer);
        if !method.server_streaming {
            return grpc.unary(request, path, RawCodec).await.map(|_| ());
        }
        let mut stream = grpc
            .server_streaming(request, path, RawCodec)
            .await?
            .into_inner();
        // A feed waits for new events; one read shows whether it started.
        return match tokio::time::timeout(STREAM_READ, stream.message()).await {
            Ok(read) => read.map(|_| ()),
            Err(_) => Ok(()),
        };
    }
    let mut request = tonic::Request::new(futures::stream::iter(first.collect::<Vec<_>>()));
    request.metadata_mut().insert("authorization", bearer);
    let mut stream = grpc.streaming(request, path, RawCodec).await?.into_inner();
    while stream.message().await?.is_some() {}
    Ok(())
}

/// One request of a run that did not get a clear status.
#[derive(Debug)]
pub struct Failure {
    /// Index of the request in the run.
    pub index: usize,
    /// The RPC.
    pub path: String,
    /// What went wrong.
    pub problem: String,
    /// Hex of the (first) request message, at most 512 bytes of it.
    pub request: String,
}

/// Counts of a finished run.
#[derive(Debug, Default)]
pub struct Summary {
    /// Requests sent.
    pub requests: usize,
    /// Status code name -> count.
    pub codes: std::collections::BTreeMap<String, usize>,
    /// RPCs that answered OK at least once.
    pub reached: BTreeSet<String>,
    /// Requests that did not get a clear status.
    pub failures: Vec<Failure>,
}

/// Sends `requests` random requests to every RPC of `service` (spread
/// evenly at random) on `channel` with `key`; `pool` holds valid values
/// (existing ids) to mix in. Returns the counts, failures included: the
/// caller asserts with [`Summary::assert_clear`].
pub async fn run(
    schema: &Schema,
    service: &str,
    channel: Channel,
    key: &str,
    pool: &[String],
    requests: usize,
    seed: u64,
) -> anyhow::Result<Summary> {
    let methods = schema.methods(service)?;
    let results = futures::stream::iter(0..requests)
        .map(|index| {
            let channel = channel.clone();
            async move {
                let mut rng = Rng::new(seed ^ (index as u64).wrapping_mul(0x2545_f491_4f6c_dd1d));
                let method = rng.pick(methods);
                let hostility = rng.pick(&[100, 40, 10]);
                rng.set_hostility(hostility);
                let count = if method.client_streaming {
                    rng.below(5)
                } else {
                    1
                };
                let corrupted = rng.percent(4);
                let mut messages: Vec<Vec<u8>> = (0..count)
                    .map(|_| schema.request(&mut rng, &method.input, pool))
                    .collect();
                if corrupted && let Some(first) = messages.first_mut() {
                    corrupt(&mut rng, first);
                }
                let shown = messages
                    .first()
                    .map(|m| hex::encode(&m[..m.len().min(512)]))
                    .unwrap_or_default();
                let outcome =
                    tokio::time::timeout(CALL_TIMEOUT, call(channel, key, &method, messages)).await;
                let problem = match &outcome {
                    Err(_) => Some(format!("no answer within {CALL_TIMEOUT:?}")),
                    Ok(Ok(())) => None,
                    Ok(Err(status)) => judge(schema, &method, status, corrupted),
                }
                .map(|p| {
                    if corrupted {
                        format!("{p} (request corrupted on the wire)")
                    } else {
                        p
                    }
                });
                let code = match &outcome {
                    Ok(Ok(())) => Code::Ok,
                    Ok(Err(status)) => status.code(),
                    Err(_) => Code::DeadlineExceeded,
                };
                (index, method, code, problem, shown)
            }
        })
        .buffer_unordered(CONCURRENCY)
        .collect::<Vec<_>>()
        .await;
    let mut summary = Summary {
        requests,
        ..Summary::default()
    };
    for (index, method, code, problem, request) in results {
        *summary.codes.entry(format!("{code:?}")).or_default() += 1;
        if code == Code::Ok {
            summary.reached.insert(method.path.clone());
        }
        if let Some(problem) = problem {
            summary.failures.push(Failure {
                index,
                path: method.path.clone(),
                problem,
                request,
            });
        }
    }
    summary.failures.sort_by_key(|f| f.index);
    Ok(summary)
}

/// Why `status` is not a clear answer to a request of `method`, if it is not.
fn judge(
    schema: &Schema,
    method: &Method,
    status: &tonic::Status,
    corrupted: bool,
) -> Option<String> {
    let code = status.code();
    if !CLEAR_CODES.contains(&code) {
        return Some(format!("{code:?}: {}", status.message()));
    }
    if code != Code::InvalidArgument || corrupted {
        return None;
    }
    let Some(bad_request) = status.get_details_bad_request() else {
        return Some(format!(
            "INVALID_ARGUMENT without a BadRequest detail: {}",
            status.message()
        ));
    };
    let fields = schema.reachable_fields(&method.input);
    let named = bad_request.field_violations.iter().any(|v| {
        let first = v.field.split(['.', '[']).next().unwrap_or_default();
        fields.contains(first)
    });
    if named {
        None
    } else {
        Some(format!(
            "INVALID_ARGUMENT names no field of {}: {:?} ({})",
            method.input,
            bad_request
                .field_violations
                .iter()
                .map(|v| v.field.as_str())
                .collect::<Vec<_>>(),
            status.message()
        ))
    }
}

impl Summary {
    /// Fails with the seed and every unclear answer (the first 20 of them)
    /// when any request did not get a clear status.
    pub fn assert_clear(&self, service: &str, seed: u64) -> anyhow::Result<()> {
        if self.failures.is_empty() {
            return Ok(());
        }
        let mut report = format!(
            "{} of {} requests to {service} got no clear status \
             (replay with {SEED_VAR}={seed} {REQUESTS_VAR}={}):\n",
            self.failures.len(),
            self.requests,
            self.requests
        );
        for f in self.failures.iter().take(20) {
            report.push_str(&format!(
                "  #{} {}: {}\n    request: {}\n",
                f.index,
                f.path,
                bowtie_runtime::error::bounded(&f.problem, 400),
                bowtie_runtime::error::bounded(&f.request, 400),
            ));
        }
        anyhow::bail!(report)
    }
}

/// An HTTP/2 client with no timer of its own, for any generated client
/// (`XClient::with_origin(bare_client(), uri)`): tonic's `Channel` enforces
/// a request's `grpc-timeout` itself (and answers CANCELLED), which would
/// hide whether the server honours it.
pub fn bare_client() -> hyper_util::client::legacy::Client<
    hyper_util::client::legacy::connect::HttpConnector,
    tonic::body::Body,
> {
    hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .http2_only(true)
        .build_http()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_generated_request_decodes_as_its_message_type() -> anyhow::Result<()> {
        use bowtie_proto::{accounts, funnel, revenue, scoring};
        let schema = Schema::load()?;
        let pool = vec!["0195f0a2-7c1e-7a00-8000-000000000001".to_owned()];
        let decodes = |name: &str, bytes: &[u8]| -> bool {
            match name {
                ".bowtie.accounts.v1.UpdateAccountRequest" => {
                    accounts::UpdateAccountRequest::decode(bytes).is_ok()
                }
                ".bowtie.funnel.v1.RecordTransitionRequest" => {
                    funnel::RecordTransitionRequest::decode(bytes).is_ok()
                }
                ".bowtie.revenue.v1.CreateSubscriptionRequest" => {
                    revenue::CreateSubscriptionRequest::decode(bytes).is_ok()
                }
                ".bowtie.scoring.v1.UpdateScorecardRequest" => {
                    scoring::UpdateScorecardRequest::decode(bytes).is_ok()
                }
                // Any other message: the wire structure at least.
                _ => <() as prost::Message>::decode(bytes).is_ok(),
            }
        };
        for service in [
            "bowtie.accounts.v1.AccountsService",
            "bowtie.funnel.v1.FunnelService",
            "bowtie.revenue.v1.RevenueService",
            "bowtie.scoring.v1.ScoringService",
        ] {
            for method in schema.methods(service)? {
                for seed in 0..50 {
                    let mut rng = Rng::new(seed);
                    rng.set_hostility([100, 40, 10][seed as usize % 3]);
                    let bytes = schema.request(&mut rng, &method.input, &pool);
                    assert!(bytes.len() <= MAX_REQUEST_BYTES);
                    assert!(
                        decodes(&method.input, &bytes),
                        "{} seed {seed}",
                        method.path
                    );
                }
            }
        }
        Ok(())
    }

    #[test]
    fn the_same_seed_gives_the_same_request() -> anyhow::Result<()> {
        let schema = Schema::load()?;
        let input = ".bowtie.revenue.v1.CreateSubscriptionRequest";
        let a = schema.request(&mut Rng::new(7), input, &[]);
        let b = schema.request(&mut Rng::new(7), input, &[]);
        let c = schema.request(&mut Rng::new(8), input, &[]);
        assert_eq!(a, b);
        assert_ne!(a, c);
        Ok(())
    }

    #[test]
    fn splitmix_matches_its_reference_values() {
        // SplitMix64 from seed 0: the reference implementation's first two
        // outputs are 0xe220a8397b1dcdaf and 0x6e789e6aa1b965f4.
        let mut rng = Rng::new(0);
        assert_eq!(rng.next_u64(), 0xe220_a839_7b1d_cdaf);
        assert_eq!(rng.next_u64(), 0x6e78_9e6a_a1b9_65f4);
    }
}
