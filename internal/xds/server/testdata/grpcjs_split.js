// Counts which backend answers N calls of grpc.health.v1.Health/Check
// through grpc-js-xds, for grpc_test.go. Usage:
// node grpcjs_split.js TARGET N [KEY VALUE]..., with GRPC_XDS_BOOTSTRAP set
// and NODE_PATH naming a node_modules that has @grpc/grpc-js and
// @grpc/grpc-js-xds (scripts/test.sh installs them). Each call carries the
// KEY VALUE metadata pairs.
// Prints {"backend": count, ...} as JSON.
const grpc = require('@grpc/grpc-js');
require('@grpc/grpc-js-xds').register();
const [target, n] = [process.argv[2], Number(process.argv[3])];
const pairs = process.argv.slice(4);
const client = new grpc.Client(target, grpc.credentials.createInsecure());
const counts = {};
function call(i) {
  if (i === n) {
    process.stdout.write(JSON.stringify(counts));
    client.close();
    return;
  }
  let backend = '';
  const md = new grpc.Metadata();
  for (let j = 0; j + 1 < pairs.length; j += 2) md.set(pairs[j], pairs[j + 1]);
  const c = client.makeUnaryRequest('/grpc.health.v1.Health/Check', (x) => x, (x) => x, Buffer.alloc(0),
    md, { deadline: Date.now() + 20000 }, (err) => {
      if (err) { console.error(err.message); process.exit(1); }
      counts[backend] = (counts[backend] || 0) + 1;
      call(i + 1);
    });
  c.on('metadata', (md) => { backend = (md.get('x-backend')[0] || '').toString(); });
}
call(0);
