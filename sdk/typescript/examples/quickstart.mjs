import { Client, NotFoundError } from 'repobox';

const client = new Client(); // $REPOBOX_URL (default http://127.0.0.1:8000), $REPOBOX_API_KEY
const repo = process.env.REPO_URL ?? 'https://github.com/psf/requests';

// A sandbox for the duration of the callback (destroyed afterwards, also on error).
await client.withSandbox(repo, { max_runtime_secs: 1800 }, async (box) => {
  const result = await box.exec('git log --oneline | wc -l');
  console.log('commits:', result.stdout.trim(), 'exit', result.exit_code);

  for await (const event of box.stream('for i in 1 2 3; do echo $i; sleep 0.1; done')) {
    if (event.type === 'exit') console.log('exit', event.exit_code);
    else process.stdout.write(`${event.type}: ${event.data}`);
  }

  await box.writeFile('/workspace/notes.txt', 'hello\n');
  console.log(await box.readText('/workspace/notes.txt'));
  console.log((await box.git.status()).changes);

  const server = await box.processes.start('python3 -m http.server 8080 --bind 127.0.0.1');
  await box.processes.kill(server);
});

// One command across many repositories, with progress as it comes.
const job = await client.jobs.create('git log --oneline | wc -l', [repo, { repo_url: repo, branch: 'main' }]);
for await (const event of client.jobs.events(job)) {
  if (event.type === 'result') console.log(event.result.index, event.result.status, event.result.stdout.trim());
  else console.log('done:', event.job.counts);
}
await client.jobs.delete(job);

try {
  await client.get('repo-container-0-0');
} catch (err) {
  if (err instanceof NotFoundError) console.log(err.status, err.code, err.detail);
  else throw err;
}
