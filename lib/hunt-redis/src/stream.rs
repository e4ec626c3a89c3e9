//! Reading tier streams (`hunt:{t<N>}:stream`): entries decoded into events.

use prost::Message;
use redis::RedisError;
use redis::aio::ConnectionLike;

use leaderboard_proto::keys;
use leaderboard_proto::v1::HuntEvent;

/// A stream entry as Redis returns it: its id and its field/value pairs.
pub type RawEntry = (String, Vec<(String, Vec<u8>)>);

/// Why a stream could not be read.
#[derive(Debug, thiserror::Error)]
pub enum StreamError {
    /// Redis failed.
    #[error("redis: {0}")]
    Redis(#[from] RedisError),
    /// An entry has no event field, or its payload is not a `HuntEvent`.
    #[error("stream entry {id}: {reason}")]
    Malformed {
        /// The entry's id.
        id: String,
        /// What is wrong with it.
        reason: String,
    },
}

/// Decodes one entry into its id and event.
///
/// # Errors
/// [`StreamError::Malformed`] when the entry has no `e` field or it does not decode.
pub fn decode((id, fields): RawEntry) -> Result<(String, HuntEvent), StreamError> {
    let Some((_, payload)) = fields
        .into_iter()
        .find(|(field, _)| field == keys::STREAM_EVENT_FIELD)
    else {
        return Err(StreamError::Malformed {
            id,
            reason: format!("no `{}` field", keys::STREAM_EVENT_FIELD),
        });
    };
    match HuntEvent::decode(payload.as_slice()) {
        Ok(event) => Ok((id, event)),
        Err(err) => Err(StreamError::Malformed {
            id,
            reason: err.to_string(),
        }),
    }
}

/// Every entry of tier `tier`'s stream between ids `start` and `end` (`-` and `+` for all),
/// in stream order.
///
/// # Errors
/// [`StreamError`]: Redis failed, or an entry is malformed.
pub async fn range<C: ConnectionLike + Send>(
    conn: &mut C,
    tier: u32,
    start: &str,
    end: &str,
) -> Result<Vec<(String, HuntEvent)>, StreamError> {
    let entries: Vec<RawEntry> = redis::cmd("XRANGE")
        .arg(keys::tier_stream(tier))
        .arg(start)
        .arg(end)
        .query_async(conn)
        .await?;
    entries.into_iter().map(decode).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_decode_or_say_why_not() {
        let event = HuntEvent {
            shard_id: 3,
            tier: 1,
            tier_seq: 9,
            ..HuntEvent::default()
        };
        let good = (
            "1-0".to_owned(),
            vec![("e".to_owned(), event.encode_to_vec())],
        );
        assert_eq!(decode(good).ok(), Some(("1-0".to_owned(), event)));
        let missing = ("2-0".to_owned(), vec![("x".to_owned(), vec![1])]);
        assert!(matches!(
            decode(missing),
            Err(StreamError::Malformed { .. })
        ));
        let junk = (
            "3-0".to_owned(),
            vec![("e".to_owned(), vec![0xff, 0xff, 0xff])],
        );
        assert!(matches!(decode(junk), Err(StreamError::Malformed { .. })));
    }
}
