//! Everything the event loop waits for, merged into one channel.

use crossterm::event::Event;

use crate::data::DataEvent;

#[derive(Debug)]
pub(crate) enum Message {
    /// A key, a click, a paste or a resize.
    Input(Event),
    /// Time passed: ages and countdowns on screen move on.
    Tick,
    Data(DataEvent),
    /// The terminal's input ended or failed; the dashboard cannot go on.
    InputClosed(Option<std::io::Error>),
}
