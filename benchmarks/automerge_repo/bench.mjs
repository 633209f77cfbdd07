// automerge-repo beside Coherency in the sync benchmark (benchmarks/README.md, `sync`).
//
//   node bench.mjs server RECORDS.json STORAGE_DIR
//       A "server" repo (storage on disk) holding one document per record of the
//       JSON array; prints {"port", "urls"} on one line once it listens on a loopback
//       WebSocket, and serves until stdin closes.
//   node bench.mjs client ws://127.0.0.1:PORT URLS.json STORAGE_DIR
//       A fresh "client" repo with its own storage fetches every document of URLS.json
//       from the server and flushes them to its storage; prints {"seconds", ...}.
//
// Written for the benchmark runner (benchmarks/_bench_peer.py), which times the
// client beside Coherency's own initial sync of the same records.
import { readFileSync } from "node:fs"
import { Repo } from "@automerge/automerge-repo"
import {
  WebSocketClientAdapter,
  WebSocketServerAdapter,
} from "@automerge/automerge-repo-network-websocket"
import { NodeFSStorageAdapter } from "@automerge/automerge-repo-storage-nodefs"
import { WebSocketServer } from "ws"

const [mode, ...args] = process.argv.slice(2)

async function serve(recordsPath, storageDir) {
  const records = JSON.parse(readFileSync(recordsPath, "utf8"))
  const socket = new WebSocketServer({ host: "127.0.0.1", port: 0 })
  await new Promise((resolve) => socket.once("listening", resolve))
  const repo = new Repo({
    storage: new NodeFSStorageAdapter(storageDir),
    // The client's one thread is busy for seconds while it loads thousands of
    // documents and cannot answer pings: the default keep-alive (5 s) would cut it off.
    network: [new WebSocketServerAdapter(socket, 600_000)],
    // Answer what a peer asks for by id; announce nothing (a sync server's setting).
    shareConfig: { announce: async () => false, access: async () => true },
  })
  const urls = records.map((record) => repo.create(record).url)
  await repo.flush()
  process.stdout.write(JSON.stringify({ port: socket.address().port, urls }) + "\n")
  process.stdin.resume()
  process.stdin.on("end", async () => {
    await repo.shutdown()
    socket.close()
    process.exit(0)
  })
}

async function fetchAll(url, urlsPath, storageDir) {
  const urls = JSON.parse(readFileSync(urlsPath, "utf8"))
  const start = performance.now()
  const repo = new Repo({
    storage: new NodeFSStorageAdapter(storageDir),
    network: [new WebSocketClientAdapter(url)],
  })
  // A document asked for before any peer is connected is "unavailable" at once.
  if (repo.peers.length === 0) {
    await new Promise((resolve) => repo.networkSubsystem.once("peer", resolve))
  }
  const handles = await Promise.all(urls.map((docUrl) => repo.find(docUrl)))
  await repo.flush()
  const seconds = (performance.now() - start) / 1000
  const held = handles.filter((handle) => Object.keys(handle.doc() ?? {}).length > 0).length
  process.stdout.write(JSON.stringify({ seconds, documents: urls.length, held }) + "\n")
  await repo.shutdown()
  process.exit(0)
}

if (mode === "server") {
  await serve(...args)
} else if (mode === "client") {
  await fetchAll(...args)
} else {
  process.stderr.write("usage: node bench.mjs server RECORDS STORAGE | client URL URLS STORAGE\n")
  process.exit(2)
}
