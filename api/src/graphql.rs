//! GraphQL transport on `/v1/graphql`: over HTTP (`http`), over WebSocket with both
//! sub-protocols (`ws`, the protocol loop; `outbox`, the frames and the bounded
//! outbound queue), and the shared subscription executions behind WebSocket
//! subscriptions (`realtime`). Responses and errors are written one way for both
//! (`response`). Schemas, documents and resolvers are `schema-gen`'s.

pub mod http;
pub mod outbox;
pub mod realtime;
pub mod response;
pub mod ws;
