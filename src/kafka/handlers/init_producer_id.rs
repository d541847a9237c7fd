//! InitProducerId for idempotent producers (the Java client and kafka-python enable
//! idempotence by default). Ids come from the controller, committed through Raft, so they are
//! never reused. Transactional ids are not supported yet and are refused.

use std::ops::RangeInclusive;
use std::rc::Rc;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::init_producer_id_request::InitProducerIdRequest;
use kafka_protocol::messages::init_producer_id_response::InitProducerIdResponse;
use kafka_protocol::messages::ProducerId;

use crate::controller::{ControllerReply, ControllerRequest};
use crate::kafka::errors;
use crate::runtime::context::ShardContext;
use crate::runtime::frame::{ShardReply, ShardRequest};

pub const VERSIONS: RangeInclusive<i16> = 0..=4;

pub async fn handle(
    ctx: &Rc<ShardContext>,
    _version: i16,
    request: InitProducerIdRequest,
) -> InitProducerIdResponse {
    let response = InitProducerIdResponse::default()
        .with_producer_id(ProducerId(-1))
        .with_producer_epoch(-1);
    if request.transactional_id.is_some() {
        return response.with_error_code(ResponseError::TransactionalIdAuthorizationFailed.code());
    }
    // A producer that knows its id asks for a new epoch (KIP-360): bump it while it fits.
    if request.producer_id.0 >= 0
        && request.producer_epoch >= 0
        && request.producer_epoch < i16::MAX - 1
    {
        return response
            .with_producer_id(request.producer_id)
            .with_producer_epoch(request.producer_epoch + 1);
    }
    match ctx
        .call(
            0,
            ShardRequest::Controller(ControllerRequest::AllocateProducerId),
        )
        .await
    {
        Ok(ShardReply::Controller(ControllerReply::ProducerId(Ok(id)))) => response
            .with_producer_id(ProducerId(id))
            .with_producer_epoch(0),
        Ok(ShardReply::Controller(ControllerReply::ProducerId(Err(error)))) => {
            response.with_error_code(errors::controller_error(&error).code())
        }
        _ => response.with_error_code(ResponseError::CoordinatorNotAvailable.code()),
    }
}
