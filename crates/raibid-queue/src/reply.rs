//! Decoding of the loosely typed replies of `XINFO` and friends.

use std::collections::HashMap;

use redis::Value;

use crate::QueueError;

/// `[k1, v1, k2, v2, ...]` (RESP2) or a map (RESP3) into a lookup table.
pub(crate) fn pairs(value: &Value) -> Result<HashMap<String, Value>, QueueError> {
    match value {
        Value::Array(items) => {
            let mut map = HashMap::new();
            for pair in items.chunks(2) {
                if let [k, v] = pair {
                    map.insert(string(k)?, v.clone());
                }
            }
            Ok(map)
        }
        Value::Map(items) => items
            .iter()
            .map(|(k, v)| Ok((string(k)?, v.clone())))
            .collect(),
        other => Err(QueueError::Protocol(format!(
            "expected a map, got {other:?}"
        ))),
    }
}

pub(crate) fn string(value: &Value) -> Result<String, QueueError> {
    match value {
        Value::BulkString(b) => Ok(String::from_utf8_lossy(b).into_owned()),
        Value::SimpleString(s) => Ok(s.clone()),
        Value::Int(i) => Ok(i.to_string()),
        Value::VerbatimString { text, .. } => Ok(text.clone()),
        other => Err(QueueError::Protocol(format!(
            "expected a string, got {other:?}"
        ))),
    }
}

/// Integers, or `nil` (XINFO's lag is nil when Redis cannot compute it) as `None`.
pub(crate) fn int(value: Option<&Value>) -> Option<i64> {
    match value? {
        Value::Int(i) => Some(*i),
        Value::BulkString(b) => std::str::from_utf8(b).ok()?.parse().ok(),
        Value::SimpleString(s) => s.parse().ok(),
        _ => None,
    }
}

pub(crate) fn array(value: &Value) -> &[Value] {
    match value {
        Value::Array(items) => items,
        _ => &[],
    }
}

/// The millisecond part of a stream id `1700000000000-0`.
pub(crate) fn id_millis(id: &str) -> Option<i64> {
    id.split('-').next()?.parse().ok()
}

/// One entry of an `XREAD`/`XREADGROUP` reply.
pub(crate) struct StreamEntry {
    pub stream: String,
    pub id: String,
    pub fields: HashMap<String, Value>,
}

impl StreamEntry {
    pub fn field(&self, name: &str) -> Result<Option<String>, QueueError> {
        self.fields.get(name).map(string).transpose()
    }
}

/// Flattens `[[stream, [[id, [k, v, ...]], ...]], ...]` (nil when nothing arrived).
pub(crate) fn stream_entries(reply: &Value) -> Result<Vec<StreamEntry>, QueueError> {
    let mut out = Vec::new();
    for stream in array(reply) {
        let parts = array(stream);
        let name = parts.first().map(string).transpose()?.unwrap_or_default();
        out.extend(entries(&name, parts.get(1).unwrap_or(&Value::Nil))?);
    }
    Ok(out)
}

/// `[[id, [k, v, ...]], ...]` of stream `name` (`XAUTOCLAIM`'s second element). Entries
/// deleted from the stream come as `[id, nil]` and have no fields.
pub(crate) fn entries(name: &str, list: &Value) -> Result<Vec<StreamEntry>, QueueError> {
    let mut out = Vec::new();
    for entry in array(list) {
        let e = array(entry);
        out.push(StreamEntry {
            stream: name.to_owned(),
            id: e.first().map(string).transpose()?.unwrap_or_default(),
            fields: match e.get(1) {
                None | Some(Value::Nil) => HashMap::new(),
                Some(fields) => pairs(fields)?,
            },
        });
    }
    Ok(out)
}
