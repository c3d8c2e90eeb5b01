// The peer for examples/bench_peer.rs: the minimal WebSocket room relay a team would write
// with npm `ws` instead of the chat server. No accounts, no persistence (nothing is kept),
// no ordering or delivery guarantees beyond what one process and TCP give.
//
// Protocol (the chat server's frames where they overlap):
//   connect   ws://HOST:PORT/?user=NAME          (NAME is echoed in events; no auth)
//   join      {"type":"join","channel_id":N}     answered {"type":"joined","channel_id":N}
//   publish   {"type":"message","channel_id":N,"content":"...","client_id":"..."}
//   event     {"type":"message_created","channel_id":N,"data":{...}} to every socket in
//             the room, the sender's included
//
// PORT (default 8090) and HOST (default 127.0.0.1) come from the environment.
'use strict';

const http = require('node:http');
const { WebSocketServer, WebSocket } = require('ws');

const port = Number(process.env.PORT || 8090);
const host = process.env.HOST || '127.0.0.1';

/** room id -> Set of sockets */
const rooms = new Map();
let nextId = 1;

// Plain HTTP answers a health check, so a supervisor (or the benchmark) can wait for it.
const server = http.createServer((req, res) => {
  const ok = req.url === '/healthz';
  res.writeHead(ok ? 200 : 404, { 'content-type': 'application/json' });
  res.end(ok ? '{"status":"ok"}' : '{"error":"not_found"}');
});

const wss = new WebSocketServer({ server, maxPayload: 64 * 1024 });

wss.on('connection', (ws, req) => {
  ws.user = new URL(req.url, 'http://relay').searchParams.get('user') || 'anonymous';
  ws.rooms = new Set();

  ws.on('message', (raw, isBinary) => {
    if (isBinary) return;
    let frame;
    try {
      frame = JSON.parse(raw);
    } catch {
      ws.send('{"type":"error","code":"invalid_json"}');
      return;
    }
    const channelId = frame.channel_id;
    if (frame.type === 'join' && Number.isInteger(channelId)) {
      let room = rooms.get(channelId);
      if (!room) rooms.set(channelId, (room = new Set()));
      room.add(ws);
      ws.rooms.add(channelId);
      ws.send(JSON.stringify({ type: 'joined', channel_id: channelId }));
    } else if (frame.type === 'message' && typeof frame.content === 'string') {
      const room = rooms.get(channelId);
      if (!room || !ws.rooms.has(channelId)) {
        ws.send('{"type":"error","code":"not_found"}');
        return;
      }
      // Serialised once for the whole room: every member gets the same string.
      const event = JSON.stringify({
        type: 'message_created',
        channel_id: channelId,
        data: {
          id: nextId++,
          channel_id: channelId,
          user: ws.user,
          content: frame.content,
          client_id: frame.client_id,
          created_at: new Date().toISOString(),
        },
      });
      for (const peer of room) {
        if (peer.readyState === WebSocket.OPEN) peer.send(event);
      }
    } else {
      ws.send('{"type":"error","code":"bad_request"}');
    }
  });

  ws.on('close', () => {
    for (const channelId of ws.rooms) {
      const room = rooms.get(channelId);
      room.delete(ws);
      if (room.size === 0) rooms.delete(channelId);
    }
  });

  // An 'error' event without a listener would crash the process.
  ws.on('error', () => ws.terminate());
});

server.listen(port, host, () => {
  console.log(`relay listening on ${host}:${port} (ws ${require('ws/package.json').version}, node ${process.version})`);
});
