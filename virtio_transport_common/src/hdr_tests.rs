//! Unit tests of `hdr` (kept out of the module file so the library code stays free of
//! test-only `unwrap`s).
use super::*;

fn sample() -> Hdr {
    Hdr {
        src_cid: 3,
        dst_cid: 2,
        src_port: 1234,
        dst_port: 80,
        len: 5,
        ty: 1,
        op: 5,
        flags: 0,
        buf_alloc: 262144,
        fwd_cnt: 77,
    }
}

#[test]
fn layout_matches_struct_virtio_vsock_hdr() {
    let b = sample().encode();
    assert_eq!(&b[0..8], &3u64.to_le_bytes());
    assert_eq!(&b[8..16], &2u64.to_le_bytes());
    assert_eq!(&b[16..20], &1234u32.to_le_bytes());
    assert_eq!(&b[20..24], &80u32.to_le_bytes());
    assert_eq!(&b[24..28], &5u32.to_le_bytes());
    assert_eq!(&b[28..30], &1u16.to_le_bytes());
    assert_eq!(&b[30..32], &5u16.to_le_bytes());
    assert_eq!(&b[32..36], &0u32.to_le_bytes());
    assert_eq!(&b[36..40], &262144u32.to_le_bytes());
    assert_eq!(&b[40..44], &77u32.to_le_bytes());
    assert_eq!(Hdr::decode(&b), sample());
}

#[test]
fn parse_needs_full_header() {
    let mut buf = [0u8; 50];
    buf[..HDR_LEN].copy_from_slice(&sample().encode());
    let (h, rest) = Hdr::parse(&buf).unwrap();
    assert_eq!(h, sample());
    assert_eq!(rest.len(), 6);
    assert!(Hdr::parse(&buf[..43]).is_none());
}

#[test]
fn validate_accepts_and_types() {
    let v = validate(&sample(), &ValidateCtx::default()).unwrap();
    assert_eq!(
        (v.op, v.ty, v.len, v.flags),
        (Op::Rw, SockType::Stream, 5, 0)
    );
    assert_eq!(v.src, Addr { cid: 3, port: 1234 });
    assert_eq!(v.dst, Addr { cid: 2, port: 80 });
}

#[test]
fn validate_rules() {
    let ctx = ValidateCtx::default();
    let bad = |f: &dyn Fn(&mut Hdr)| {
        let mut h = sample();
        f(&mut h);
        validate(&h, &ctx)
    };
    assert_eq!(bad(&|h| h.op = 0), Err(HdrError::BadOp));
    assert_eq!(bad(&|h| h.op = 8), Err(HdrError::BadOp));
    assert_eq!(bad(&|h| h.ty = TYPE_DGRAM), Err(HdrError::BadType));
    assert_eq!(bad(&|h| h.ty = 2), Err(HdrError::BadType));
    assert_eq!(
        bad(&|h| h.len = MAX_PKT_BUF_SIZE + 1),
        Err(HdrError::LenTooLarge)
    );
    assert_eq!(bad(&|h| h.op = 4), Err(HdrError::LenNonZeroForControlOp));
    assert_eq!(bad(&|h| h.src_cid = 1 << 32 | 3), Err(HdrError::BadSrcCid));
    assert_eq!(bad(&|h| h.dst_cid = 1 << 40), Err(HdrError::BadDstCid));
    let host = ValidateCtx {
        src_cid: Some(3),
        dst_cid: Some(VMADDR_CID_HOST),
        ..ctx
    };
    let mut h = sample();
    assert!(validate(&h, &host).is_ok());
    h.src_cid = 4;
    assert_eq!(validate(&h, &host), Err(HdrError::BadSrcCid));
    h.src_cid = 3;
    h.dst_cid = 1;
    assert_eq!(validate(&h, &host), Err(HdrError::BadDstCid));
}

#[test]
fn flags_are_masked_per_op() {
    let seq = ValidateCtx {
        seqpacket: true,
        ..ValidateCtx::default()
    };
    let mut h = sample();
    h.flags = 0xffff_ffff;
    assert_eq!(validate(&h, &seq).map(|v| v.flags), Ok(0));
    h.ty = 2;
    assert_eq!(validate(&h, &seq).map(|v| v.flags), Ok(SEQ_EOM | SEQ_EOR));
    h.op = Op::Shutdown as u16;
    h.len = 0;
    assert_eq!(validate(&h, &seq).map(|v| v.flags), Ok(SHUTDOWN_BOTH));
    h.op = Op::Request as u16;
    assert_eq!(validate(&h, &seq).map(|v| v.flags), Ok(0));
}

#[test]
fn rst_reply_swaps_and_never_answers_rst() {
    let r = rst_reply(&sample()).unwrap();
    assert_eq!(
        (r.src_cid, r.src_port, r.dst_cid, r.dst_port),
        (2, 80, 3, 1234)
    );
    assert_eq!((r.op, r.ty, r.len, r.flags, r.buf_alloc), (3, 1, 0, 0, 0));
    assert!(rst_reply(&r).is_none());
}

#[test]
fn errors_that_want_rst() {
    assert!(HdrError::BadType.wants_rst());
    assert!(HdrError::BadOp.wants_rst());
    assert!(HdrError::LenNonZeroForControlOp.wants_rst());
    assert!(!HdrError::LenTooLarge.wants_rst());
    assert!(!HdrError::BadSrcCid.wants_rst());
    assert!(!HdrError::BadDstCid.wants_rst());
}

#[test]
fn join_takes_plain_stream_payloads_of_one_connection() {
    let a = sample();
    let b = Hdr { len: 7, buf_alloc: 1 << 20, fwd_cnt: 99, ..a };
    let j = join(&a, &b).unwrap();
    assert_eq!((j.len, j.buf_alloc, j.fwd_cnt), (12, 1 << 20, 99));
    assert_eq!((j.src_cid, j.dst_cid, j.src_port, j.dst_port, j.ty, j.op, j.flags), (3, 2, 1234, 80, 1, 5, 0));
    // Another connection, a SEQPACKET message, flags, another op: apart.
    assert!(join(&a, &Hdr { src_port: 1235, ..b }).is_none());
    assert!(join(&a, &Hdr { dst_cid: 4, ..b }).is_none());
    assert!(join(&a, &Hdr { dst_port: 81, ..b }).is_none());
    assert!(join(&Hdr { ty: 2, ..a }, &Hdr { ty: 2, ..b }).is_none());
    assert!(join(&a, &Hdr { flags: SEQ_EOM, ..b }).is_none());
    assert!(join(&a, &Hdr { op: Op::CreditUpdate as u16, len: 0, ..b }).is_none());
    assert!(join(&Hdr { op: Op::Shutdown as u16, flags: 3, len: 0, ..a }, &b).is_none());
    // Never past one packet's 64 KiB.
    assert!(join(&Hdr { len: MAX_PKT_BUF_SIZE - 7, ..a }, &b).is_some());
    assert!(join(&Hdr { len: MAX_PKT_BUF_SIZE - 6, ..a }, &b).is_none());
    assert!(join(&Hdr { len: u32::MAX, ..a }, &b).is_none());
}
