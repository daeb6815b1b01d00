// One PM2 trial for bench/_peer_trial.py: node _pm2_driver.js N
// Starts PM2's daemon (PM2_HOME from the environment), then measures, in
// seconds: start N apps (sleep 1000) until all are online; a SIGKILL of one
// until PM2's bus reports its exit; restart of another until it is online.
// Prints one JSON line. The daemon is left running (the caller measures it,
// then runs `pm2 kill`).
const pm2 = require("pm2");

const n = parseInt(process.argv[2], 10);
const now = () => Number(process.hrtime.bigint()) / 1e9;
const call = (fn, ...args) =>
  new Promise((resolve, reject) => fn.call(pm2, ...args, (err, out) => (err ? reject(err) : resolve(out))));

async function main() {
  await call(pm2.connect, false); // false: a daemon of its own, as users run it
  const apps = [];
  for (let i = 0; i < n; i++) {
    apps.push({ name: `p${i}`, script: "/bin/sleep", args: "1000", interpreter: "none", autorestart: false });
  }
  let t0 = now();
  await call(pm2.start, apps);
  for (;;) {
    const list = await call(pm2.list);
    if (list.length === n && list.every((p) => p.pm2_env.status === "online" && p.pid)) break;
    await new Promise((r) => setTimeout(r, 1));
  }
  const start = now() - t0;

  const bus = await call(pm2.launchBus);
  const list = await call(pm2.list);
  const victim = list.find((p) => p.name === "p0");
  const exited = new Promise((resolve) =>
    bus.on("process:event", (e) => {
      if (e.event === "exit" && e.process && e.process.name === "p0") resolve(now());
    })
  );
  t0 = now();
  process.kill(victim.pid, "SIGKILL");
  const crash = (await exited) - t0;

  t0 = now();
  await call(pm2.restart, "p1");
  for (;;) {
    const p1 = (await call(pm2.describe, "p1"))[0];
    if (p1 && p1.pm2_env.status === "online" && p1.pid) break;
    await new Promise((r) => setTimeout(r, 1));
  }
  const restart = now() - t0;
  console.log(JSON.stringify({ start, crash, restart }));
  pm2.disconnect();
  process.exit(0);
}

main().catch((err) => {
  console.error(err && err.stack ? err.stack : String(err));
  process.exit(1);
});
