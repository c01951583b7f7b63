//! Somewhere for a test's tracing subscriber to write, to search what was logged.

use std::sync::{Arc, Mutex};

/// A shared, growing buffer: each clone writes to the same bytes. A subscriber takes it as
/// `.with_writer(move || buffer.clone())`.
#[derive(Clone, Default)]
pub struct LogBuffer(Arc<Mutex<Vec<u8>>>);

impl LogBuffer {
    /// Everything written so far.
    pub fn text(&self) -> String {
        String::from_utf8(self.0.lock().unwrap().clone()).expect("tracing writes UTF-8")
    }

    /// Everything written since the last `take`, which starts the buffer afresh.
    pub fn take(&self) -> String {
        String::from_utf8(std::mem::take(&mut *self.0.lock().unwrap()))
            .expect("tracing writes UTF-8")
    }
}

impl std::io::Write for LogBuffer {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    #[test]
    fn clones_share_the_bytes_and_take_empties_them() {
        let buffer = LogBuffer::default();
        buffer.clone().write_all(b"one ").unwrap();
        buffer.clone().write_all(b"two").unwrap();
        assert_eq!(buffer.text(), "one two");
        assert_eq!(buffer.take(), "one two");
        assert_eq!(buffer.text(), "");
    }
}
