//! One QMP connection: the greeting, capabilities negotiation, commands
//! matched to their answers by id, and the events that arrive between.

use std::collections::VecDeque;
use std::path::Path;
use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};
use tokio::time::{Instant, timeout_at};

use super::error::QmpError;
use super::wire::{self, MAX_LINE, Message};

/// How long the server may stay silent while an answer is due. QMP
/// commands xfull sends return at once (jobs report through events).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);

/// Events kept for [`Qmp::wait_event`]; older ones are dropped (a busy
/// VM can send many, and nothing here needs old ones).
const MAX_EVENTS: usize = 1024;

#[derive(Debug)]
pub struct Qmp {
    socket: String,
    reader: BufReader<OwnedReadHalf>,
    writer: OwnedWriteHalf,
    next_id: u64,
    events: VecDeque<(String, Value)>,
    timeout: Duration,
    version: String,
}

impl Qmp {
    /// Connects, reads the greeting and leaves capabilities negotiation
    /// mode, so that commands can be sent.
    pub async fn connect(path: &Path) -> Result<Qmp, QmpError> {
        Self::connect_with(path, DEFAULT_TIMEOUT).await
    }

    pub async fn connect_with(path: &Path, timeout: Duration) -> Result<Qmp, QmpError> {
        let socket = path.display().to_string();
        let stream = tokio::time::timeout(timeout, UnixStream::connect(path))
            .await
            .map_err(|_| QmpError::Timeout {
                socket: socket.clone(),
                during: "connecting".into(),
                secs: timeout.as_secs(),
            })?
            .map_err(|e| QmpError::Connect {
                socket: socket.clone(),
                message: e.to_string(),
            })?;
        let (r, w) = stream.into_split();
        let mut qmp = Qmp {
            socket,
            reader: BufReader::new(r),
            writer: w,
            next_id: 1,
            events: VecDeque::new(),
            timeout,
            version: String::new(),
        };
        let deadline = Instant::now() + timeout;
        match qmp.read_message("the greeting", deadline).await? {
            Message::Greeting { version } => qmp.version = version,
            other => {
                return Err(qmp.protocol(format!("expected the QMP greeting, got {other:?}")));
            }
        }
        qmp.execute("qmp_capabilities", Value::Null).await?;
        Ok(qmp)
    }

    /// QEMU's version from the greeting.
    pub fn version(&self) -> &str {
        &self.version
    }

    pub fn socket(&self) -> &str {
        &self.socket
    }

    /// Runs a command; `args` is `Value::Null` for none. QEMU's error is
    /// returned as [`QmpError::Command`], quoting its message.
    pub async fn execute(&mut self, command: &str, args: Value) -> Result<Value, QmpError> {
        let id = self.next_id;
        self.next_id += 1;
        let args = (!args.is_null()).then_some(&args);
        let line = wire::encode_command(command, args, id);
        let during = || format!("the command {command}");
        let deadline = Instant::now() + self.timeout;
        let written = timeout_at(deadline, async {
            self.writer.write_all(&line).await?;
            self.writer.flush().await
        })
        .await;
        match written {
            Err(_) => return Err(self.timeout_error(during())),
            Ok(Err(_)) => return Err(self.closed(during())),
            Ok(Ok(())) => {}
        }
        loop {
            let expected = Value::from(id);
            match self.read_message(&during(), deadline).await? {
                Message::Return {
                    id: Some(got),
                    value,
                } if got == expected => return Ok(value),
                Message::Error {
                    id: Some(got),
                    class,
                    desc,
                } if got == expected => {
                    return Err(QmpError::Command {
                        command: command.into(),
                        class,
                        desc,
                    });
                }
                // An error without an id: QEMU could not parse the
                // request at all.
                Message::Error {
                    id: None,
                    class,
                    desc,
                } => {
                    return Err(QmpError::Command {
                        command: command.into(),
                        class,
                        desc,
                    });
                }
                Message::Event { name, data } => self.keep_event(name, data),
                // An earlier command that timed out, answered late: ids
                // only grow, so it is nobody's answer now.
                Message::Return { id: Some(got), .. } | Message::Error { id: Some(got), .. }
                    if got.as_u64().is_some_and(|g| g < id) => {}
                other => {
                    return Err(self.protocol(format!(
                        "an answer to another request during {command}: {other:?}"
                    )));
                }
            }
        }
    }

    /// Waits for the first event (already received or new) for which
    /// `wanted(name, data)` holds, and removes it from the queue.
    pub async fn wait_event(
        &mut self,
        during: &str,
        limit: Duration,
        wanted: impl Fn(&str, &Value) -> bool,
    ) -> Result<(String, Value), QmpError> {
        if let Some(i) = self.events.iter().position(|(n, d)| wanted(n, d)) {
            return Ok(self.events.remove(i).expect("the index was just found"));
        }
        let deadline = Instant::now() + limit;
        loop {
            match self.read_message(during, deadline).await? {
                Message::Event { name, data } if wanted(&name, &data) => return Ok((name, data)),
                Message::Event { name, data } => self.keep_event(name, data),
                other => {
                    return Err(self.protocol(format!("an unexpected answer: {other:?}")));
                }
            }
        }
    }

    /// Drops the events received so far.
    pub fn clear_events(&mut self) {
        self.events.clear();
    }

    fn keep_event(&mut self, name: String, data: Value) {
        if self.events.len() == MAX_EVENTS {
            self.events.pop_front();
        }
        self.events.push_back((name, data));
    }

    async fn read_message(&mut self, during: &str, deadline: Instant) -> Result<Message, QmpError> {
        let line = match timeout_at(deadline, read_line(&mut self.reader)).await {
            Err(_) => return Err(self.timeout_error(during.into())),
            Ok(Err(LineError::Closed)) => return Err(self.closed(during.into())),
            Ok(Err(LineError::TooLong)) => {
                return Err(self.protocol(format!(
                    "a message longer than {MAX_LINE} bytes during {during}"
                )));
            }
            Ok(Ok(line)) => line,
        };
        wire::decode(&line).map_err(|reason| self.protocol(format!("{reason} (during {during})")))
    }

    fn protocol(&self, reason: String) -> QmpError {
        QmpError::Protocol {
            socket: self.socket.clone(),
            reason,
        }
    }

    fn closed(&self, during: String) -> QmpError {
        QmpError::Closed {
            socket: self.socket.clone(),
            during,
        }
    }

    fn timeout_error(&self, during: String) -> QmpError {
        QmpError::Timeout {
            socket: self.socket.clone(),
            during,
            secs: self.timeout.as_secs(),
        }
    }
}

enum LineError {
    Closed,
    TooLong,
}

/// One line without its newline, refused past [`MAX_LINE`] before more
/// is buffered.
async fn read_line(reader: &mut BufReader<OwnedReadHalf>) -> Result<Vec<u8>, LineError> {
    let mut line = Vec::new();
    loop {
        let buf = reader.fill_buf().await.map_err(|_| LineError::Closed)?;
        if buf.is_empty() {
            return Err(LineError::Closed);
        }
        let (take, done) = match buf.iter().position(|&b| b == b'\n') {
            Some(i) => (i, true),
            None => (buf.len(), false),
        };
        if line.len() + take > MAX_LINE {
            return Err(LineError::TooLong);
        }
        line.extend_from_slice(&buf[..take]);
        reader.consume(if done { take + 1 } else { take });
        if done {
            // QMP lines end in "\r\n" on some builds.
            if line.last() == Some(&b'\r') {
                line.pop();
            }
            return Ok(line);
        }
    }
}
