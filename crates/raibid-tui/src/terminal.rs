//! Taking over the terminal, and giving it back whatever happens.
//!
//! A dashboard that dies in raw mode on the alternate screen leaves the user a terminal that
//! echoes nothing. So the terminal is restored by a guard on every way out of [`crate::run`],
//! and by a panic hook installed before the first escape sequence is written, which restores
//! it before the panic message prints (otherwise the message lands on the alternate screen and
//! vanishes).

use std::io::{self, Stdout, Write};
use std::panic::{self, PanicHookInfo};
use std::sync::Arc;

use crossterm::cursor::Show;
use crossterm::event::{
    DisableBracketedPaste, DisableMouseCapture, EnableBracketedPaste, EnableMouseCapture,
};
use crossterm::execute;
use crossterm::terminal::{
    EnterAlternateScreen, LeaveAlternateScreen, disable_raw_mode, enable_raw_mode,
};
use ratatui::Terminal;
use ratatui::backend::CrosstermBackend;

type Hook = dyn Fn(&PanicHookInfo<'_>) + Sync + Send + 'static;

/// The terminal in dashboard mode; dropping it puts everything back.
pub(crate) struct TerminalGuard {
    pub terminal: Terminal<CrosstermBackend<Stdout>>,
    previous_hook: Arc<Hook>,
}

impl TerminalGuard {
    pub fn enter() -> io::Result<Self> {
        let previous_hook: Arc<Hook> = Arc::from(panic::take_hook());
        let chained = Arc::clone(&previous_hook);
        panic::set_hook(Box::new(move |info| {
            restore();
            chained(info);
        }));
        let guard_hook = previous_hook;
        let setup = || -> io::Result<Terminal<CrosstermBackend<Stdout>>> {
            enable_raw_mode()?;
            execute!(
                io::stdout(),
                EnterAlternateScreen,
                EnableMouseCapture,
                EnableBracketedPaste
            )?;
            let mut terminal = Terminal::new(CrosstermBackend::new(io::stdout()))?;
            terminal.clear()?;
            Ok(terminal)
        };
        match setup() {
            Ok(terminal) => Ok(Self {
                terminal,
                previous_hook: guard_hook,
            }),
            Err(e) => {
                restore();
                reinstate(guard_hook);
                Err(e)
            }
        }
    }

    /// Writes an escape sequence straight to the terminal, past ratatui's buffer.
    pub fn write_raw(&mut self, sequence: &str) -> io::Result<()> {
        let out = self.terminal.backend_mut();
        out.write_all(sequence.as_bytes())?;
        out.flush()
    }
}

impl Drop for TerminalGuard {
    fn drop(&mut self) {
        restore();
        // Swapping hooks is not allowed while panicking; the hook has restored already then.
        if !std::thread::panicking() {
            reinstate(Arc::clone(&self.previous_hook));
        }
    }
}

fn reinstate(hook: Arc<Hook>) {
    panic::set_hook(Box::new(move |info| hook(info)));
}

/// Leaves every mode [`TerminalGuard::enter`] set. Each step is tried even if one fails:
/// a half-restored terminal is still better than none.
fn restore() {
    let _ = disable_raw_mode();
    let _ = execute!(
        io::stdout(),
        DisableBracketedPaste,
        DisableMouseCapture,
        LeaveAlternateScreen,
        Show
    );
}

/// OSC 52: asks the terminal (and tmux, screen, ssh in between) to put `text` on the
/// clipboard of the machine the user sits at, which also works over ssh.
pub(crate) fn osc52_copy(text: &str) -> String {
    use base64::Engine;
    let encoded = base64::engine::general_purpose::STANDARD.encode(text);
    format!("\x1b]52;c;{encoded}\x07")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn osc52_encodes_the_text() {
        assert_eq!(osc52_copy("01ABC"), "\x1b]52;c;MDFBQkM=\x07");
    }
}
