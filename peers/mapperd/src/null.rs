//! The null mapper (`mapperd --null`): the pipeline's ceiling for
//! `xseg-bench volume --target null`.
//!
//! It keeps no map, takes no lock and reaches no blocker: a volume is a
//! name and a size in memory, and a map request is answered from
//! arithmetic on the loop thread, each object mapped to the name its first
//! owned data object would have (volume id 1, epoch 1). Writes never need
//! a MAP_COMMIT. Composed with `blockerd --backend null`, a request costs
//! what the transport and the peers' loops cost, and nothing else.

use std::collections::HashMap;

use archipelago_peer::{Ctx, Done, Handler};
use archipelago_protocol::names::data_object_name;
use archipelago_protocol::payload::{
    encode_extents, CreateRequest, MapExtent, NameField, Payload, VolumeInfo,
};
use archipelago_protocol::sizes::DEFAULT_OBJECT_SIZE;
use archipelago_protocol::{Error, ErrorCode, Op};
use xseg_shm::Request;

/// Volume id and epoch of every null volume's objects.
const NULL_VOLUME_ID: u64 = 1;

/// The null mapper: volume name → size.
#[derive(Debug, Default)]
pub struct NullMapper {
    volumes: HashMap<Vec<u8>, u64>,
}

impl NullMapper {
    fn serve(
        &mut self,
        op: Op,
        target: &[u8],
        offset: u64,
        size: u64,
        buf: &mut [u8],
    ) -> Result<u64, Error> {
        let missing = || {
            Error::with(
                ErrorCode::NotFound,
                format!("volume {} (null mapper)", String::from_utf8_lossy(target)),
            )
        };
        match op {
            Op::Create => {
                let c = CreateRequest::decode(buf)?;
                if self.volumes.contains_key(target) {
                    return Err(Error::with(
                        ErrorCode::Exists,
                        format!("volume {}", String::from_utf8_lossy(target)),
                    ));
                }
                self.volumes.insert(target.to_vec(), c.size);
                Ok(0)
            }
            Op::Info | Op::Open => {
                let size = *self.volumes.get(target).ok_or_else(missing)?;
                let reply = VolumeInfo {
                    size,
                    object_size: DEFAULT_OBJECT_SIZE,
                    readonly: false,
                    removed: false,
                    hashed: false,
                    format_version: 3,
                    epoch: NULL_VOLUME_ID,
                    volume_id: NULL_VOLUME_ID,
                    parent: None,
                };
                reply.encode(buf)?;
                Ok(VolumeInfo::SIZE as u64)
            }
            Op::Close => Ok(0),
            Op::Delete => self.volumes.remove(target).map(|_| 0).ok_or_else(missing),
            Op::MapRead | Op::MapWrite => {
                let volume_size = *self.volumes.get(target).ok_or_else(missing)?;
                let end = offset.checked_add(size).filter(|&e| e <= volume_size);
                let Some(end) = end else {
                    return Err(Error::with(
                        ErrorCode::OutOfRange,
                        format!("{size} bytes at {offset} past the volume's {volume_size}"),
                    ));
                };
                let mut extents = Vec::new();
                let mut at = offset;
                while at < end {
                    let index = at / DEFAULT_OBJECT_SIZE;
                    let in_object = at % DEFAULT_OBJECT_SIZE;
                    let len = (DEFAULT_OBJECT_SIZE - in_object).min(end - at);
                    let id = format!("{NULL_VOLUME_ID:016x}");
                    let name = data_object_name(&id, NULL_VOLUME_ID, index);
                    extents.push(MapExtent {
                        index,
                        offset_in_object: in_object,
                        len,
                        flags: MapExtent::MISSING_READS_ZERO,
                        reserved: 0,
                        object: NameField::new(name.as_bytes())?,
                    });
                    at += len;
                }
                Ok(encode_extents(&extents, buf)? as u64)
            }
            Op::MapCommit => Ok(0),
            // A FLUSH reaching the map store: nothing to make durable.
            Op::Sync => Ok(0),
            _ => Err(Error::with(
                ErrorCode::Unsupported,
                format!("the null mapper does not serve {op}"),
            )),
        }
    }
}

impl Handler for NullMapper {
    fn handle(&mut self, ctx: &mut Ctx<'_>, op: Op, mut req: Request) -> Option<(Request, Done)> {
        let d = ctx.port().desc(&req);
        let target = d.target().as_bytes().to_vec();
        let (offset, size) = (d.offset(), d.size());
        let r = self.serve(op, &target, offset, size, ctx.port().data_mut(&mut req));
        Some((req, Done::from(r)))
    }
}
