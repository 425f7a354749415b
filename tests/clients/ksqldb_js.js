// ksqldb-js (npm), unchanged, against Sluice's ksqlDB REST API: DDL on /ksql,
// inserts and push queries over HTTP/2 cleartext, pull queries over HTTP/1.1
// (JSON array form), TERMINATE of a push query. Run by tests/clients.rs; exits
// non-zero on the first wrong answer.

const assert = require("node:assert/strict");
const KsqlDB = require("ksqldb-js");

const client = new KsqlDB({ ksqldbURL: `http://127.0.0.1:${process.env.SLUICE_HTTP_PORT}` });

function check(what, got, want) {
  try {
    assert.deepStrictEqual(got, want);
  } catch (e) {
    console.error(`${what}: got ${JSON.stringify(got)}, want ${JSON.stringify(want)}`);
    process.exit(1);
  }
  console.log(`ok: ${what}`);
}

function within(ms, promise, what) {
  return Promise.race([
    promise,
    new Promise((_, reject) => setTimeout(() => reject(new Error(`${what}: no answer in ${ms} ms`)), ms)),
  ]);
}

const byFirst = (a, b) => JSON.stringify(a).localeCompare(JSON.stringify(b));

async function main() {
  const created = await client.createStream("trades", ["sym VARCHAR KEY", "qty INT", "px DOUBLE"], "trades", "json", 1);
  check("createStream", created.data[0].commandStatus.status, "SUCCESS");

  // Inserts over HTTP/2: one acknowledgement per DATA frame.
  const acks = await within(
    10000,
    client.insertStream("trades", [
      { SYM: "ACME", QTY: 10, PX: 1.5 },
      { SYM: "INIT", QTY: 20, PX: 2.25 },
    ]),
    "insertStream",
  );
  check("insertStream acknowledgements", acks, [
    { status: "ok", seq: 0 },
    { status: "ok", seq: 1 },
  ]);

  // A pull query over HTTP/1.1 (axios): the JSON array form.
  const pulled = await client.pull("SELECT sym, qty FROM trades;");
  check("pull header", [pulled[0].columnNames, pulled[0].columnTypes], [["sym", "qty"], ["STRING", "INTEGER"]]);
  check("pull rows", pulled.slice(1).sort(byFirst), [["ACME", 10], ["INIT", 20]]);

  // CREATE STREAM ... AS SELECT answers with the id of its query.
  const queryId = await client.createStreamAs("big", ["sym", "qty"], "trades", { kafka_topic: "big" }, "qty > 15");
  check("createStreamAs query id", typeof queryId === "string" && queryId.length > 0, true);

  // A push query over HTTP/2: the header first (its id), then each row as a
  // frame of its own, as rows arrive.
  const frames = [];
  let rowsArrived;
  const fourRows = new Promise((resolve) => (rowsArrived = resolve));
  const pushId = await within(
    10000,
    client.push("SELECT sym, qty FROM trades EMIT CHANGES;", (chunk) => {
      frames.push(JSON.parse(chunk));
      if (frames.length === 4) rowsArrived();
    }),
    "push",
  );
  check("push query id", pushId.startsWith("transient_"), true);
  await client.insertStream("trades", [
    { SYM: "NEW1", QTY: 1, PX: 1 },
    { SYM: "NEW2", QTY: 2, PX: 2 },
    { SYM: "NEW3", QTY: 3, PX: 3 },
  ]);
  await within(10000, fourRows, "push rows");
  check("push header", frames[0].columnNames, ["sym", "qty"]);
  check("push rows, one per frame", frames.slice(1), [["NEW1", 1], ["NEW2", 2], ["NEW3", 3]]);

  // TERMINATE ends a push query like a persistent one.
  const terminated = await client.terminate(pushId);
  check("terminate a push query", terminated.commandStatus.status, "SUCCESS");

  const health = await client.inspectServerHealth();
  check("healthcheck", health.data.isHealthy, true);
  const info = await client.inspectServerInfo();
  check("server info", info.data.KsqlServerInfo.serverStatus, "RUNNING");
  console.log("done");
}

main().then(
  () => process.exit(0),
  (e) => {
    console.error(e);
    process.exit(1);
  },
);
