//! The peer transport's pure half: how Raft messages of many groups travel between nodes.
//!
//! `wire` mirrors raft-rs's messages in prost types (peers' bytes are decoded by prost, with
//! its recursion limit, never by rust-protobuf; see STACK.md's advisory), and `frame` is the
//! length + CRC + version + kind framing with an incremental decoder. Nothing here does I/O:
//! the node's glommio adapter (`src/runtime/peer.rs`) and the simulation both drive it.

pub mod frame;
pub mod wire;

pub use frame::{Frame, FrameDecoder, FrameError, FrameKind, FRAME_BYTES_MAX};
pub use wire::{Envelope, GroupMessages};
