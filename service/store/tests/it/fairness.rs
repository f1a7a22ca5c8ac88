//! Fair queuing cases of the conformance suite (run by `conformance.rs` against every backend):
//! clients take turns, a client at its concurrency cap waits for its own jobs to end, and every
//! way out of `active` or `waiting` keeps the turns and the counts right.

use std::time::Duration;

use flashcard_core::events::WaitReason;

use flashcard_store::{
    Admission, Canceller, Claim, ClaimRequest, FinishOutcome, Outcome, Submission,
};

use super::conformance::{DynStore, claim_request, complete, cost, request, result};

async fn submit_as(store: &DynStore, owner: &str, n: u32) -> String {
    let mut s = Submission::new(request(n), 3);
    s.owner = owner.to_owned();
    match store.submit(s).await.unwrap() {
        Admission::Accepted { job_id } => job_id,
        other => panic!("not accepted: {other:?}"),
    }
}

fn capped(max_jobs: u32, cap: u32) -> ClaimRequest<'static> {
    ClaimRequest {
        client_cap: cap,
        ..claim_request(max_jobs)
    }
}

fn owners(claims: &[Claim]) -> Vec<String> {
    claims.iter().map(|c| c.job.owner.clone()).collect()
}

fn ids(claims: &[Claim]) -> Vec<String> {
    claims.iter().map(|c| c.lease.job_id.clone()).collect()
}

/// One client's backlog never puts another's first job behind it: claims alternate between the
/// clients with waiting work, one job per turn, in one call and across calls.
pub async fn clients_take_turns_whatever_one_client_s_backlog(store: DynStore) {
    let mut a = Vec::new();
    for n in 0..20 {
        a.push(submit_as(&store, "a", n).await);
    }
    let b1 = submit_as(&store, "b", 100).await;
    let b2 = submit_as(&store, "b", 101).await;
    let c1 = submit_as(&store, "c", 200).await;

    let first = store.claim(&claim_request(4)).await.unwrap().jobs;
    assert_eq!(ids(&first), vec![a[0].clone(), b1, c1, a[1].clone()]);
    let next = store.claim(&claim_request(1)).await.unwrap().jobs;
    assert_eq!(ids(&next), vec![b2], "b's turn comes before a's third job");
    // Only a is left: it keeps the turn for a whole batch.
    let rest = store.claim(&claim_request(30)).await.unwrap().jobs;
    assert_eq!(ids(&rest), a[2..].to_vec());
    assert_eq!(store.counts().await.unwrap().waiting, 0);
}

/// A client at its cap leaves the ring until one of its active jobs ends (finished, cancelled
/// or stalled), while the others carry on; its waiting jobs still count as waiting.
pub async fn a_client_at_its_cap_waits_for_its_own_jobs_to_end(store: DynStore) {
    for n in 0..6 {
        submit_as(&store, "a", n).await;
    }
    submit_as(&store, "b", 100).await;
    submit_as(&store, "b", 101).await;
    let claimed = store.claim(&capped(10, 2)).await.unwrap().jobs;
    assert_eq!(owners(&claimed), ["a", "b", "a", "b"]);
    assert!(store.claim(&capped(10, 2)).await.unwrap().jobs.is_empty());
    let counts = store.counts().await.unwrap();
    assert_eq!((counts.waiting, counts.active), (4, 4));

    // A finished job gives its client the turn back: the finish's own claim takes a's next.
    let r = result();
    let done = store
        .finish(
            &claimed[0].lease,
            Outcome::Completed {
                result: &r,
                duration_ms: 5,
            },
            cost(1),
            Some(&capped(10, 2)),
        )
        .await
        .unwrap();
    assert_eq!(done.outcome, FinishOutcome::Completed);
    assert_eq!(owners(&done.claimed.jobs), ["a"]);

    // A cancelled active job too.
    store
        .cancel(&claimed[2].lease.job_id, Canceller::Admin)
        .await
        .unwrap();
    assert_eq!(
        owners(&store.claim(&capped(10, 2)).await.unwrap().jobs),
        ["a"]
    );

    // And a stalled one: its lease expires, its client's turn comes back, and the job waits
    // at the end of its client's line.
    let c1 = submit_as(&store, "c", 200).await;
    let c2 = submit_as(&store, "c", 201).await;
    let short = ClaimRequest {
        lease: Duration::from_millis(50),
        ..capped(10, 1)
    };
    assert_eq!(
        ids(&store.claim(&short).await.unwrap().jobs),
        vec![c1.clone()]
    );
    tokio::time::sleep(Duration::from_millis(120)).await;
    assert_eq!(store.recover_stalled(5).await.unwrap().requeued, 1);
    assert_eq!(
        ids(&store.claim(&capped(10, 1)).await.unwrap().jobs),
        vec![c2]
    );
    let counts = store.counts().await.unwrap();
    assert_eq!(
        (counts.waiting, counts.active),
        (3, 5),
        "a's two and c1 wait"
    );
}

/// Without a cap nothing is held: a client with the only waiting work takes every free slot.
pub async fn without_a_cap_one_client_takes_every_slot(store: DynStore) {
    for n in 0..8 {
        submit_as(&store, "a", n).await;
    }
    assert_eq!(store.claim(&capped(8, 0)).await.unwrap().jobs.len(), 8);
    let counts = store.counts().await.unwrap();
    assert_eq!((counts.waiting, counts.active), (0, 8));
}

/// A client whose last waiting job is cancelled leaves the ring, so its next job gives it one
/// turn, not two.
pub async fn a_cancelled_last_job_leaves_one_turn_per_client(store: DynStore) {
    let gone = submit_as(&store, "a", 0).await;
    store.cancel(&gone, Canceller::Admin).await.unwrap();
    let a2 = submit_as(&store, "a", 1).await;
    let a3 = submit_as(&store, "a", 2).await;
    let b1 = submit_as(&store, "b", 100).await;
    let b2 = submit_as(&store, "b", 101).await;
    let claimed = store.claim(&claim_request(4)).await.unwrap().jobs;
    assert_eq!(ids(&claimed), vec![a2, b1, a3, b2]);
    assert_eq!(store.counts().await.unwrap().waiting, 0);
}

/// A released job goes back first in its client's line; its client keeps its place in the ring.
pub async fn a_released_job_goes_back_first_in_its_client_s_line(store: DynStore) {
    let a1 = submit_as(&store, "a", 0).await;
    let a2 = submit_as(&store, "a", 1).await;
    let b1 = submit_as(&store, "b", 100).await;
    let first = store.claim(&claim_request(1)).await.unwrap().jobs;
    assert_eq!(ids(&first), vec![a1.clone()]);
    store
        .finish(
            &first[0].lease,
            Outcome::Release {
                reason: WaitReason::Released,
            },
            cost(0),
            None,
        )
        .await
        .unwrap();
    let order = store.claim(&claim_request(3)).await.unwrap().jobs;
    assert_eq!(ids(&order), vec![b1, a1, a2]);
    for claim in &order {
        complete(&store, claim, 1).await;
    }
    let counts = store.counts().await.unwrap();
    assert_eq!((counts.waiting, counts.active, counts.completed), (0, 0, 3));
}
