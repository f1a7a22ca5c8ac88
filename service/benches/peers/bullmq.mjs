// BullMQ side of the queue benchmark (driven by service/benches/queue_bench.rs).
//
// Producer (this process) and worker (a forked child process) on one redis-server:
//   node bullmq.mjs --port 6390 --queue q1 --jobs 10000 --mode single|bulk
//        [--producers 50] [--bulk 50] [--concurrency 50] [--timeout-ms 300000]
// `single`: `producers` concurrent loops, each awaiting one `queue.add` per job (like 50 HTTP
// connections each waiting for its 202). `bulk`: one loop awaiting `queue.addBulk` of `bulk`
// jobs at a time. The worker runs no-op jobs at `concurrency`.
// PEER_JOB_DATA (JSON) is every job's data, plus its index `i`; PEER_JOB_RESULT (JSON) is what
// the no-op processor returns, so BullMQ stores and moves the same bytes per job as the service
// does (the orchestrator passes the service's own request body and result).
//
// Protocol on stdin/stdout, one JSON object per line, so the caller can snapshot Redis
// (`INFO commandstats`) around exactly the measured part:
//   -> {"event":"ready", ...}   worker and queue connected; waits for a line on stdin
//   <- go
//   -> {"event":"result", ...}  after the last completion; waits for a line on stdin
//   <- close                    closes the worker and the queue, then exits
// End to end runs from just before the first add to the worker's last `completed` event (as
// BullMQ's own benchmarks time it), both read from the wall clock (Date.now()) of this machine.
//
// bullmq and ioredis are not part of the repository: BENCH_PEERS_DIR names the folder that
// `npm install --prefix` filled (service/benches/run-queue-bench.sh does it).

import { fork } from 'node:child_process';
import { createRequire } from 'node:module';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';

function fail(message) {
  process.stderr.write(`bullmq.mjs: ${message}\n`);
  process.exit(2);
}

function parseArgs(argv) {
  const opts = {
    role: 'producer',
    port: 6379,
    queue: 'bench',
    jobs: 10000,
    mode: 'single',
    producers: 50,
    bulk: 50,
    concurrency: 50,
    timeoutMs: 300000,
  };
  const args = argv.slice();
  if (args[0] === 'worker') {
    opts.role = 'worker';
    args.shift();
  }
  for (let i = 0; i < args.length; i += 2) {
    const [name, value] = [args[i], args[i + 1]];
    if (value === undefined) fail(`missing value for ${name}`);
    const key = name.replace(/^--/, '').replace(/-(.)/g, (_, c) => c.toUpperCase());
    if (!(key in opts) || key === 'role') fail(`unknown option ${name}`);
    opts[key] = typeof opts[key] === 'number' ? Number(value) : value;
    if (typeof opts[key] === 'number' && !Number.isFinite(opts[key])) fail(`bad number ${name}`);
  }
  if (!['single', 'bulk'].includes(opts.mode)) fail(`--mode must be single or bulk`);
  return opts;
}

function loadPeers() {
  const dir = process.env.BENCH_PEERS_DIR;
  if (!dir) fail('BENCH_PEERS_DIR is not set (the folder npm installed bullmq and ioredis into)');
  const require = createRequire(join(dir, 'package.json'));
  try {
    const bullmq = require('bullmq');
    const version = require('bullmq/package.json').version;
    let ioredisVersion = 'unknown';
    try {
      ioredisVersion = require('ioredis/package.json').version;
    } catch {}
    return { bullmq, version, ioredisVersion };
  } catch (e) {
    fail(`cannot load bullmq from ${dir}: ${e.message} (run service/benches/run-queue-bench.sh)`);
  }
}

const emit = (obj) => process.stdout.write(JSON.stringify(obj) + '\n');

function envJson(name) {
  const text = process.env[name];
  if (!text) return undefined;
  try {
    return JSON.parse(text);
  } catch (e) {
    fail(`${name} is not JSON: ${e.message}`);
  }
}
const jobData = envJson('PEER_JOB_DATA') ?? {};
const jobResult = envJson('PEER_JOB_RESULT');

function percentile(sorted, p) {
  if (sorted.length === 0) return null;
  return sorted[Math.min(sorted.length - 1, Math.round((sorted.length - 1) * p))];
}

async function runWorker(opts) {
  const { bullmq } = loadPeers();
  const connection = { host: '127.0.0.1', port: opts.port, maxRetriesPerRequest: null };
  let completed = 0;
  let failed = 0;
  let reported = false;
  const worker = new bullmq.Worker(opts.queue, async () => jobResult, {
    connection,
    concurrency: opts.concurrency,
  });
  const report = () => {
    if (!reported && completed + failed >= opts.jobs) {
      reported = true;
      process.send({ type: 'done', lastCompletedAt: Date.now(), completed, failed });
    }
  };
  worker.on('completed', () => {
    completed += 1;
    report();
  });
  worker.on('failed', () => {
    failed += 1;
    report();
  });
  worker.on('error', (e) => process.stderr.write(`bullmq worker error: ${e.message}\n`));
  process.on('message', async (msg) => {
    if (msg && msg.type === 'close') {
      await worker.close();
      process.exit(0);
    }
  });
  process.on('disconnect', () => process.exit(0));
  await worker.waitUntilReady();
  process.send({ type: 'ready' });
}

async function runProducer(opts) {
  const { bullmq, version, ioredisVersion } = loadPeers();
  const connection = { host: '127.0.0.1', port: opts.port, maxRetriesPerRequest: null };
  const deadline = setTimeout(() => fail(`no result within ${opts.timeoutMs} ms`), opts.timeoutMs);
  const lines = createInterface({ input: process.stdin });
  let closing = false;
  const nextLine = (() => {
    const waiting = [];
    const buffered = [];
    lines.on('line', (l) => (waiting.length ? waiting.shift()(l) : buffered.push(l)));
    lines.on('close', () => closing || fail('stdin closed'));
    return () => new Promise((res) => (buffered.length ? res(buffered.shift()) : waiting.push(res)));
  })();

  const child = fork(fileURLToPath(import.meta.url), ['worker', ...process.argv.slice(2)], {
    stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
  });
  child.on('exit', (code) => {
    if (code !== 0 && code !== null) fail(`worker exited with ${code}`);
  });
  const fromWorker = (type) =>
    new Promise((res) => {
      const on = (msg) => {
        if (msg && msg.type === type) {
          child.off('message', on);
          res(msg);
        }
      };
      child.on('message', on);
    });
  const workerReady = fromWorker('ready');
  const queue = new bullmq.Queue(opts.queue, { connection });
  queue.on('error', (e) => process.stderr.write(`bullmq queue error: ${e.message}\n`));
  await queue.waitUntilReady();
  await workerReady;
  emit({
    event: 'ready',
    bullmq: version,
    ioredis: ioredisVersion,
    node: process.version,
    workerPid: child.pid,
  });
  const go = await nextLine();
  if (go.trim() !== 'go') fail(`expected "go", got ${JSON.stringify(go)}`);

  const done = fromWorker('done');
  const latenciesUs = [];
  const started = Date.now();
  if (opts.mode === 'single') {
    let next = 0;
    const producer = async () => {
      while (next < opts.jobs) {
        const i = next++;
        const t = process.hrtime.bigint();
        await queue.add('job', { ...jobData, i });
        latenciesUs.push(Number((process.hrtime.bigint() - t) / 1000n));
      }
    };
    await Promise.all(Array.from({ length: opts.producers }, producer));
  } else {
    for (let i = 0; i < opts.jobs; i += opts.bulk) {
      const n = Math.min(opts.bulk, opts.jobs - i);
      const t = process.hrtime.bigint();
      await queue.addBulk(
        Array.from({ length: n }, (_, k) => ({ name: 'job', data: { ...jobData, i: i + k } })),
      );
      latenciesUs.push(Number((process.hrtime.bigint() - t) / 1000n));
    }
  }
  const added = Date.now();
  const finished = await done;
  clearTimeout(deadline);
  latenciesUs.sort((a, b) => a - b);
  emit({
    event: 'result',
    mode: opts.mode,
    jobs: opts.jobs,
    completed: finished.completed,
    failed: finished.failed,
    startedAt: started,
    addedAt: added,
    lastCompletedAt: finished.lastCompletedAt,
    // One per add (single) or per addBulk call (bulk).
    callP50Us: percentile(latenciesUs, 0.5),
    callP99Us: percentile(latenciesUs, 0.99),
    callMaxUs: percentile(latenciesUs, 1),
    calls: latenciesUs.length,
  });
  await nextLine();
  closing = true;
  child.send({ type: 'close' });
  await new Promise((res) => child.once('exit', res));
  await queue.close();
  process.exit(0);
}

const opts = parseArgs(process.argv.slice(2));
(opts.role === 'worker' ? runWorker(opts) : runProducer(opts)).catch((e) => fail(e.stack || e.message));
