// A minimal Compendium relay on Node.js and the `ws` package, to compare against (docs/performance.md).
// Not part of the build or the tests. Run: npm install ws@8 && node node-ws-relay.js 8001
const { WebSocketServer } = require('ws');
const crypto = require('crypto');
const port = Number(process.argv[2] || 8001);
const byAddr = new Map();
const wss = new WebSocketServer({ host: '127.0.0.1', port });
wss.on('connection', (ws) => {
  ws.on('message', (data, isBinary) => {
    let m;
    try { m = JSON.parse(data.toString()); } catch (e) { return ws.send(JSON.stringify({type:'ERR',errCode:400,errMsg:'invalid JSON'})); }
    if (m.type === 'INIT') {
      if (ws.addr) byAddr.delete(ws.addr);
      ws.addr = crypto.randomBytes(16).toString('hex');
      byAddr.set(ws.addr, ws);
      ws.send(JSON.stringify({type:'INITRESP',EpheWssAddr:ws.addr}));
    } else if (m.type === 'ROUTE' && typeof m.msg === 'object' && m.msg !== null) {
      const to = byAddr.get(m.EpheWssAddr);
      if (to) to.send(JSON.stringify({type:'DELIVER',msg:m.msg}));
      else ws.send(JSON.stringify({type:'ERR',errCode:404,errMsg:'not found'}));
    } else {
      ws.send(JSON.stringify({type:'ERR',errCode:400,errMsg:'invalid message'}));
    }
  });
  ws.on('close', () => { if (ws.addr) byAddr.delete(ws.addr); });
});
console.log(`listening on ${port}`);
