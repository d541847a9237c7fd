//! InitProducerId for idempotent producers (the Java client and kafka-python enable
//! idempotence by default): ids come from the controller, committed through Raft, so they are
//! never reused. With a transactional id, the transaction coordinator answers (see
//! `crate::transactions`): the same producer id again, with its epoch bumped.

use std::ops::RangeInclusive;
use std::rc::Rc;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::init_producer_id_request::InitProducerIdRequest;
use kafka_protocol::messages::init_producer_id_response::InitProducerIdResponse;
use kafka_protocol::messages::ProducerId;

use crate::controller::{ControllerError, ControllerReply, ControllerRequest};
use crate::kafka::errors;
use crate::runtime::context::ShardContext;
use crate::transactions::{TxnAnswer, TxnCall};

pub const VERSIONS: RangeInclusive<i16> = 0..=4;

pub async fn handle(
    ctx: &Rc<ShardContext>,
    _version: i16,
    request: InitProducerIdRequest,
) -> InitProducerIdResponse {
    let response = InitProducerIdResponse::default()
        .with_producer_id(ProducerId(-1))
        .with_producer_epoch(-1);
    match request.transactional_id {
        None => {}
        // Kafka's answer to an empty transactional id.
        Some(id) if id.is_empty() => {
            return response.with_error_code(ResponseError::InvalidRequest.code());
        }
        Some(id) => {
            let call = TxnCall::Init {
                transactional_id: id.to_string(),
                timeout_ms: request.transaction_timeout_ms,
            };
            return match super::call_transaction(ctx, call).await {
                TxnAnswer::Init(0, producer_id, epoch) => response
                    .with_producer_id(ProducerId(producer_id))
                    .with_producer_epoch(epoch),
                other => response.with_error_code(other.code()),
            };
        }
    }
    // Without a transactional id, Kafka ignores the id and epoch a producer sends (KIP-360
    // epoch bumps included) and hands out a fresh id: trusting them would let any client take
    // over another producer's sequence state.
    match super::controller_request(ctx, ControllerRequest::AllocateProducerId).await {
        Some(ControllerReply::ProducerId(Ok(id))) => response
            .with_producer_id(ProducerId(id))
            .with_producer_epoch(0),
        // The producer looks for another coordinator and asks again.
        Some(ControllerReply::ProducerId(Err(ControllerError::NoController(_)))) => {
            response.with_error_code(ResponseError::CoordinatorNotAvailable.code())
        }
        Some(ControllerReply::ProducerId(Err(error))) => {
            response.with_error_code(errors::controller_error(&error).code())
        }
        _ => response.with_error_code(ResponseError::CoordinatorNotAvailable.code()),
    }
}
