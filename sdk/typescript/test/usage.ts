// Not run: type-checked by `tsc` (test/types.test.mjs) against index.d.ts, so that
// the declarations compile and read as the README uses them.
import {
  Client,
  ConflictError,
  NotFoundError,
  RepoboxError,
  type ExecEvent,
  type ExecResult,
  type JobResult,
  type Sandbox,
} from '../index.js';

export async function usage(): Promise<void> {
  const client = new Client({ url: 'http://127.0.0.1:8000', apiKey: 'k', timeoutMs: 1000 });
  const box: Sandbox = await client.create('https://example.com/r.git', { branch: 'main', max_runtime_secs: 60 });
  const id: string = box.container_id;
  const result: ExecResult = await box.exec('ls', { timeout_secs: 5, environment: { A: 'b' }, stdin: 'x' });
  const code: number = result.exit_code;
  for await (const event of box.stream('echo hi')) {
    const e: ExecEvent = event;
    if (e.type === 'exit') {
      const timedOut: boolean = e.timed_out;
      void timedOut;
    } else {
      const text: string = e.data;
      void text;
    }
  }
  const text: string = await box.readText('/workspace/README.md');
  const bytes: Uint8Array = await box.readBytes('/workspace/README.md');
  await box.writeFile('/workspace/a.txt', 'hello');
  await box.writeFile('/workspace/b.bin', new Uint8Array([0, 1]));
  const file = await box.readFile('/workspace/a.txt');
  const encoding: 'utf-8' | 'base64' = file.encoding;
  const items = await box.listDir('/workspace');
  const kind: 'file' | 'directory' | 'symlink' = items[0].type;
  await box.uploadArchive('/workspace', await box.downloadArchive('/workspace/src'));
  const status = await box.git.status();
  const clean: boolean = status.clean;
  const patch: string = await box.git.diff({ untracked: false });
  await box.git.apply(patch);
  await box.reset({ processes: true });
  const proc = await box.processes.start('sleep 1', { stdin_open: true, tty: false });
  await box.processes.stdin(proc, 'x', { eof: true });
  await box.processes.kill(proc, 'SIGTERM');
  const ended = await box.processes.wait(proc.process_id, { timeoutMs: 1000 });
  const exit: number | null | undefined = ended.exit_code;
  const out = await box.processes.output(proc, { stdout_offset: 0 });
  const end: number = out.stdout_end;
  const session = await box.sessions.create({ working_directory: '/workspace' });
  const sessionResult: ExecResult = await session.exec('cd src');
  await session.delete();
  const snap = await box.snapshot({ name: 'x' });
  const fromSnap = await client.create({ snapshot: snap, max_runtime_secs: 60 });
  const forked = await box.fork({ count: 2 });
  for (const f of forked.forks) {
    if (f instanceof RepoboxError) void f.code;
    else await f.destroy();
  }
  await client.snapshots.delete(snap.snapshot_id);
  const job = await client.jobs.run('git log', ['https://example.com/r.git', { repo_url: 'x', branch: 'b' }], { concurrency: 2 });
  for await (const event of client.jobs.events(job)) {
    if (event.type === 'result') {
      const r: JobResult = event.result;
      void r.status;
    } else {
      void event.job.counts.succeeded;
    }
  }
  const results: JobResult[] = await client.jobs.results(job.job_id);
  const image = await client.images.build('https://example.com/r.git', { from: 'devcontainer' });
  const ready: 'building' | 'ready' | 'failed' = image.status;
  await client.withSandbox('https://example.com/r.git', async (b) => b.exec('true'));
  const info = await client.info();
  const maxProcs: number = info.limits.max_processes;
  try {
    await client.get('nope');
  } catch (err) {
    if (err instanceof NotFoundError || err instanceof ConflictError) {
      const s: number | undefined = err.status;
      const c: string | undefined = err.code;
      const d: string | undefined = err.detail;
      void [s, c, d];
    }
  }
  await fromSnap.destroy();
  void [id, code, text, bytes, encoding, kind, clean, end, exit, sessionResult, results, ready, maxProcs];
}
