//! Reading Redis's stream replies. Total: a reply of an unexpected shape is an error message,
//! never a panic, whatever the server (or something pretending to be one) sends.

use bytes::Bytes;
use fred::types::Value;

use crate::{EntryId, PendingSummary, RawEntry};

type Parsed<T> = Result<T, String>;

fn bytes(value: Value) -> Parsed<Bytes> {
    match value {
        Value::Bytes(bytes) => Ok(bytes),
        Value::String(text) => Ok(Bytes::clone(text.inner())),
        Value::Integer(n) => Ok(Bytes::from(n.to_string())),
        other => Err(format!("expected a string, got {:?}", other.kind())),
    }
}

fn id(value: Value) -> Parsed<EntryId> {
    let raw = bytes(value)?;
    let text = std::str::from_utf8(&raw).map_err(|_| "an entry id that is not UTF-8".to_owned())?;
    EntryId::parse(text).map_err(|err| err.to_string())
}

fn integer(value: Value) -> Parsed<u64> {
    match value {
        Value::Integer(n) => u64::try_from(n).map_err(|_| format!("negative count {n}")),
        other => {
            let raw = bytes(other)?;
            std::str::from_utf8(&raw)
                .ok()
                .and_then(|text| text.parse().ok())
                .ok_or_else(|| "expected a number".to_owned())
        }
    }
}

fn array(value: Value) -> Parsed<Vec<Value>> {
    match value {
        Value::Array(items) => Ok(items),
        Value::Null => Ok(Vec::new()),
        other => Err(format!("expected an array, got {:?}", other.kind())),
    }
}

/// `[id, [field, value, ...]]`; `None` for a nil entry (deleted while pending).
fn entry(value: Value) -> Parsed<Option<RawEntry>> {
    if matches!(value, Value::Null) {
        return Ok(None);
    }
    let mut parts = array(value)?.into_iter();
    let (Some(entry_id), Some(fields), None) = (parts.next(), parts.next(), parts.next()) else {
        return Err("an entry that is not [id, fields]".to_owned());
    };
    let entry_id = id(entry_id)?;
    if matches!(fields, Value::Null) {
        return Ok(None);
    }
    let flat = array(fields)?;
    if flat.len() % 2 != 0 {
        return Err(format!("entry {entry_id} has an odd number of field items"));
    }
    let mut fields = Vec::with_capacity(flat.len() / 2);
    let mut items = flat.into_iter();
    while let (Some(name), Some(value)) = (items.next(), items.next()) {
        fields.push((bytes(name)?, bytes(value)?));
    }
    Ok(Some(RawEntry {
        id: entry_id,
        fields,
    }))
}

/// The reply of XRANGE / XREVRANGE: a list of entries.
pub(crate) fn entries(value: Value) -> Parsed<Vec<RawEntry>> {
    let mut out = Vec::new();
    for item in array(value)? {
        out.extend(entry(item)?);
    }
    Ok(out)
}

/// The reply of XREAD / XREADGROUP for one stream: nil on timeout, else `[[key, entries]]` (or a
/// map from key to entries in RESP3).
pub(crate) fn read(value: Value, key: &str) -> Parsed<Vec<RawEntry>> {
    let streams: Vec<(Value, Value)> = match value {
        Value::Null => return Ok(Vec::new()),
        Value::Map(map) => map
            .inner()
            .into_iter()
            .map(|(k, v)| (Value::Bytes(Bytes::copy_from_slice(k.as_bytes())), v))
            .collect(),
        other => {
            let mut pairs = Vec::new();
            for stream in array(other)? {
                let mut parts = array(stream)?.into_iter();
                let (Some(name), Some(entries)) = (parts.next(), parts.next()) else {
                    return Err("a stream that is not [key, entries]".to_owned());
                };
                pairs.push((name, entries));
            }
            pairs
        }
    };
    let mut out = Vec::new();
    for (name, stream_entries) in streams {
        if bytes(name)? == key.as_bytes() {
            out.extend(entries(stream_entries)?);
        }
    }
    Ok(out)
}

/// The reply of XAUTOCLAIM: `[next cursor, entries, deleted ids]` (the last only on Redis 7).
pub(crate) fn autoclaim(value: Value) -> Parsed<(EntryId, Vec<RawEntry>)> {
    let mut parts = array(value)?.into_iter();
    let (Some(cursor), Some(claimed)) = (parts.next(), parts.next()) else {
        return Err("not [cursor, entries, ...]".to_owned());
    };
    Ok((id(cursor)?, entries(claimed)?))
}

/// The reply of XPENDING without a range: `[count, smallest, largest, [[consumer, count]...]]`.
pub(crate) fn pending_summary(value: Value) -> Parsed<PendingSummary> {
    let mut parts = array(value)?.into_iter();
    let (Some(count), Some(smallest), Some(largest), Some(consumers)) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err("not [count, smallest, largest, consumers]".to_owned());
    };
    let optional_id = |value: Value| match value {
        Value::Null => Ok(None),
        other => id(other).map(Some),
    };
    let mut per_consumer = Vec::new();
    for consumer in array(consumers)? {
        let mut pair = array(consumer)?.into_iter();
        let (Some(name), Some(count)) = (pair.next(), pair.next()) else {
            return Err("a consumer that is not [name, count]".to_owned());
        };
        let name = String::from_utf8_lossy(&bytes(name)?).into_owned();
        per_consumer.push((name, integer(count)?));
    }
    Ok(PendingSummary {
        count: integer(count)?,
        smallest: optional_id(smallest)?,
        largest: optional_id(largest)?,
        consumers: per_consumer,
    })
}

/// One entry of XPENDING's extended form.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PendingEntry {
    pub(crate) id: EntryId,
    pub(crate) deliveries: u64,
}

/// The reply of XPENDING with a range: `[[id, consumer, idle ms, deliveries]...]`.
pub(crate) fn pending_entries(value: Value) -> Parsed<Vec<PendingEntry>> {
    let mut out = Vec::new();
    for item in array(value)? {
        let mut parts = array(item)?.into_iter();
        let (Some(entry_id), Some(_consumer), Some(_idle), Some(deliveries)) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err("a pending entry that is not [id, consumer, idle, deliveries]".to_owned());
        };
        out.push(PendingEntry {
            id: id(entry_id)?,
            deliveries: integer(deliveries)?,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(text: &str) -> Value {
        Value::String(text.into())
    }

    fn arr(items: Vec<Value>) -> Value {
        Value::Array(items)
    }

    #[test]
    fn entries_keep_field_order() {
        let reply = arr(vec![arr(vec![
            s("1-1"),
            arr(vec![s("b"), s("2"), s("a"), s("1")]),
        ])]);
        let parsed = entries(reply).unwrap();
        assert_eq!(parsed[0].id, EntryId::parse("1-1").unwrap());
        assert_eq!(parsed[0].fields[0].0, Bytes::from_static(b"b"));
        assert_eq!(parsed[0].field("a"), Some(&Bytes::from_static(b"1")));
    }

    #[test]
    fn odd_shapes_are_errors_not_panics() {
        for reply in [
            s("x"),
            arr(vec![s("1-1")]),
            arr(vec![arr(vec![s("nope"), arr(vec![])])]),
            arr(vec![arr(vec![s("1-1"), arr(vec![s("lonely")])])]),
            arr(vec![arr(vec![s("1-1"), arr(vec![]), s("extra")])]),
            arr(vec![arr(vec![s("1-1"), Value::Boolean(true)])]),
        ] {
            assert!(entries(reply).is_err());
        }
        assert!(read(arr(vec![s("k")]), "k").is_err());
        assert!(autoclaim(arr(vec![])).is_err());
        assert!(
            pending_summary(arr(vec![
                Value::Integer(-1),
                Value::Null,
                Value::Null,
                Value::Null
            ]))
            .is_err()
        );
        assert!(pending_entries(arr(vec![arr(vec![s("1-1")])])).is_err());
    }

    #[test]
    fn nil_means_nothing() {
        assert!(read(Value::Null, "k").unwrap().is_empty());
        let summary = pending_summary(arr(vec![
            Value::Integer(0),
            Value::Null,
            Value::Null,
            Value::Null,
        ]))
        .unwrap();
        assert_eq!(summary.count, 0);
        assert_eq!(summary.smallest, None);
        // A pending entry deleted from the stream comes back as nil: skipped.
        let claimed = autoclaim(arr(vec![s("0-0"), arr(vec![Value::Null]), arr(vec![])])).unwrap();
        assert!(claimed.1.is_empty());
    }
}
