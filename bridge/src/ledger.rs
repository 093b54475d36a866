//! The command ledger: status events on `dtaas.v1.evt.cmd.<id>.<status>` and the
//! current status in KV `dtaas-commands` (key = command id, value = JSON event).

use async_nats::jetstream::{self, kv};
use async_nats::HeaderMap;
use dtaas_schemas::codec::Encoding;
use dtaas_schemas::command::{CommandStatus, CommandStatusEvent};
use dtaas_schemas::names::{self, header};
use dtaas_schemas::time::now_ns;

use crate::error::LedgerError;

/// Writes and reads command statuses.
#[derive(Clone)]
pub struct Ledger {
    js: jetstream::Context,
    kv: kv::Store,
}

impl Ledger {
    /// Opens the `dtaas-commands` bucket (provisioned by the runtime).
    pub async fn open(js: &jetstream::Context) -> Result<Self, LedgerError> {
        let kv = js
            .get_key_value(names::KV_COMMANDS)
            .await
            .map_err(LedgerError::Open)?;
        Ok(Self { js: js.clone(), kv })
    }

    /// Records `status` of a command: event first (awaiting the JetStream ack), then KV.
    pub async fn record(
        &self,
        id: &str,
        pt: &str,
        command: &str,
        status: CommandStatus,
        reason: Option<String>,
    ) -> Result<CommandStatusEvent, LedgerError> {
        let event = CommandStatusEvent {
            id: id.to_owned(),
            pt: pt.to_owned(),
            command: command.to_owned(),
            status,
            at: now_ns(),
            reason,
        };
        let subject = event.subject()?;
        let body = Encoding::MsgPack
            .encode(&event)
            .map_err(LedgerError::Encode)?;
        let mut headers = HeaderMap::new();
        headers.insert(header::CONTENT_TYPE, Encoding::MsgPack.content_type());
        // One event per status: a retried record is dropped by JetStream.
        headers.insert(header::MSG_ID, format!("{id}.{}", status.as_str()).as_str());
        let stored = async {
            self.js
                .publish_with_headers(subject, headers, body)
                .await?
                .await
        };
        stored.await.map_err(LedgerError::Event)?;
        let value = Encoding::Json.encode(&event).map_err(LedgerError::Encode)?;
        self.kv.put(id, value).await.map_err(LedgerError::Put)?;
        Ok(event)
    }

    /// The current status of command `id`, if known.
    pub async fn get(&self, id: &str) -> Result<Option<CommandStatusEvent>, LedgerError> {
        match self.kv.get(id).await.map_err(LedgerError::Get)? {
            Some(body) => dtaas_schemas::codec::decode(None, &body)
                .map(Some)
                .map_err(|source| LedgerError::Unreadable {
                    id: id.to_owned(),
                    source,
                }),
            None => Ok(None),
        }
    }
}
