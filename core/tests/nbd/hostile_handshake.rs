//! The client against scripted servers during the handshake: clear
//! errors for what is not NBD or lies, and the fallbacks old servers need.

use std::future::Future;

use xfull_core::nbd::proto::*;
use xfull_core::nbd::{BASE_ALLOCATION, NbdError};

use crate::peer::{Peer, options, scripted};

#[tokio::test]
async fn handshake_failures_say_what_is_wrong() {
    async fn connect<F, Fut>(script: F) -> NbdError
    where
        F: FnOnce(Peer) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        scripted(&[], options(5000), script).await.0.unwrap_err()
    }
    let e = connect(|mut p| async move { p.send(b"HTTP/1.1 400 Bad Request\r\n\r\n").await }).await;
    assert!(e.to_string().contains("not an NBD server"), "{e}");
    let e = connect(|mut p| async move {
        let mut g = NBDMAGIC.to_be_bytes().to_vec();
        g.extend_from_slice(&OLDSTYLE_MAGIC.to_be_bytes());
        g.extend_from_slice(&[0; 20]);
        p.send(&g).await;
    })
    .await;
    assert!(e.to_string().contains("oldstyle"), "{e}");
    let e = connect(|mut p| async move {
        p.greet().await;
        let (opt, _) = p.option().await;
        p.send(&encode_option_reply_header(opt, REP_ACK, 1 << 30))
            .await;
        p.idle().await;
    })
    .await;
    assert!(e.to_string().contains("a reply of 1073741824 bytes"), "{e}");
    let e = connect(|mut p| async move {
        p.greet().await;
        let (opt, _) = p.option().await;
        p.reply(opt, REP_ACK, &[]).await;
        let (opt, _) = p.option().await;
        assert_eq!(opt, OPT_GO);
        p.reply(opt, REP_ERR_UNKNOWN, b"try another").await;
        let (opt, _) = p.option().await;
        assert_eq!(opt, OPT_LIST);
        for name in ["a", "b"] {
            let mut d = 1u32.to_be_bytes().to_vec();
            d.extend_from_slice(name.as_bytes());
            p.reply(opt, REP_SERVER, &d).await;
        }
        p.reply(opt, REP_ACK, &[]).await;
        p.idle().await;
    })
    .await;
    match &e {
        NbdError::ExportNotFound {
            export,
            message,
            available,
            ..
        } => {
            assert_eq!((export.as_str(), message.as_str()), ("disk", "try another"));
            assert_eq!(available, &vec!["a".to_string(), "b".to_string()]);
        }
        other => panic!("{other:?}"),
    }
    // A server that floods the context list.
    let e = scripted(&[BASE_ALLOCATION], options(5000), |mut p| async move {
        p.greet().await;
        let (opt, _) = p.option().await;
        p.reply(opt, REP_ACK, &[]).await;
        let (opt, _) = p.option().await;
        for i in 0..5000u32 {
            let mut d = i.to_be_bytes().to_vec();
            d.extend_from_slice(b"x:y");
            p.reply(opt, REP_META_CONTEXT, &d).await;
        }
        p.idle().await;
    })
    .await
    .0
    .unwrap_err();
    assert!(e.to_string().contains("more than 4096 replies"), "{e}");
}

#[tokio::test]
async fn falls_back_to_export_name_and_simple_replies() {
    let (c, _t) = scripted(&[], options(5000), |mut p| async move {
        p.greet().await;
        let (opt, _) = p.option().await;
        assert_eq!(opt, OPT_STRUCTURED_REPLY);
        p.reply(opt, REP_ERR_UNSUP, &[]).await;
        let (opt, _) = p.option().await;
        p.reply(opt, REP_ERR_UNSUP, &[]).await;
        let (opt, name) = p.option().await;
        assert_eq!((opt, name.as_slice()), (OPT_EXPORT_NAME, &b"disk"[..]));
        let mut d = (1u64 << 20).to_be_bytes().to_vec();
        d.extend_from_slice(&(TFLAG_HAS_FLAGS | TFLAG_READ_ONLY).to_be_bytes());
        d.extend_from_slice(&[0; 124]);
        p.send(&d).await;
        while let Some(req) = p.request().await {
            if req.command == CMD_DISC {
                break;
            }
            p.send(&encode_simple_reply(0, req.cookie)).await;
            p.send(&vec![3u8; req.len as usize]).await;
        }
    })
    .await;
    let c = c.unwrap();
    assert_eq!(c.size(), 1 << 20);
    assert!(!c.structured_replies());
    assert!(c.read(10, 100_000).await.unwrap().iter().all(|b| *b == 3));
    // No flush advertised: refused without asking.
    assert!(matches!(c.flush().await, Err(NbdError::Unsupported { .. })));
    c.close().await.unwrap();
}

#[tokio::test]
async fn a_flood_of_large_list_replies_is_cut_short() {
    // 300 export names of 4,000 bytes: each reply is small enough, the
    // list is not (1.2 MB); the client stops listening at 1 MiB.
    let e = scripted(&[], options(5000), |mut p| async move {
        p.greet().await;
        let (opt, _) = p.option().await;
        p.reply(opt, REP_ACK, &[]).await;
        let (opt, _) = p.option().await;
        p.reply(opt, REP_ERR_UNKNOWN, &[]).await;
        let (opt, _) = p.option().await;
        assert_eq!(opt, OPT_LIST);
        for i in 0..300u32 {
            let name = format!("{i:04}{}", "x".repeat(3996));
            let mut d = (name.len() as u32).to_be_bytes().to_vec();
            d.extend_from_slice(name.as_bytes());
            p.reply(opt, REP_SERVER, &d).await;
        }
        p.reply(opt, REP_ACK, &[]).await;
        p.idle().await;
    })
    .await
    .0
    .unwrap_err();
    match e {
        NbdError::ExportNotFound { available, .. } => {
            assert!(available.is_empty(), "{} names kept", available.len())
        }
        other => panic!("{other:?}"),
    }
}
