#!/usr/bin/env node
/*
 * A node-mname backend for the benchmarks (bench/curve.py): ONE node process
 * serving the same zone on a balancer socket (Server#listenBalancer, for
 * mname-balancer) AND on a plain DNS port over UDP (Server#listenUdp) and TCP
 * (Server#listenTcp), for dnsdist and nginx.  So every proxy in front of it
 * reaches the same process, with the same answering code.
 *
 * Usage:
 *   node bench/node_backend.js --socket PATH --name NAME --port PORT [--address ADDR]
 *
 * Answers the names of the demo backend's zone that the benchmarks ask
 * (example.com): A www / the apex -> 192.0.2.1, A a<N> (1..254) -> 192.0.2.N,
 * TXT whoami -> NAME; another name in the zone NXDOMAIN, outside it REFUSED.
 * Uses node-mname (npm "mname") from tests/interop/node_modules
 * (scripts/install-test-deps installs it).  Logs at "warn" (LOG_LEVEL
 * overrides), so logging costs what it costs a production backend at that
 * level.  Prints a JSON line with "msg":"backend ready" once all three
 * listeners are up.  SIGTERM/SIGINT: exit 0.
 */

'use strict';

var fs = require('fs');
var path = require('path');

var interop = path.join(__dirname, '..', 'tests', 'interop');
var mnamePath = require.resolve('mname', { paths: [ interop ] });
var mname = require(mnamePath);
var bunyan = require(require.resolve('bunyan',
    { paths: [ path.dirname(mnamePath) ] }));

var USAGE = 'usage: node node_backend.js --socket PATH --name NAME ' +
    '--port PORT [--address ADDR]';
var ZONE = 'example.com';
var TTL = 60;

function die(msg) {
    process.stderr.write('node_backend.js: ' + msg + '\n' + USAGE + '\n');
    process.exit(2);
}

var opts = { socket: null, name: null, port: null, address: '127.0.0.1' };
(function parseArgs(argv) {
    var keys = { '--socket': 'socket', '--name': 'name', '--port': 'port',
        '--address': 'address' };
    for (var i = 0; i < argv.length; i++) {
        if (!keys.hasOwnProperty(argv[i]) || i + 1 >= argv.length)
            die('bad argument ' + argv[i]);
        opts[keys[argv[i]]] = argv[++i];
    }
    if (opts.socket === null || opts.name === null || opts.port === null)
        die('--socket, --name and --port are required');
    opts.port = parseInt(opts.port, 10);
    if (!(opts.port > 0 && opts.port < 65536))
        die('bad --port');
})(process.argv.slice(2));

var log = bunyan.createLogger({
    name: 'bench-backend-' + opts.name,
    level: (process.env.LOG_LEVEL || 'warn').toLowerCase(),
    stream: process.stderr,
    serializers: mname.bunyan.serializers
});

function aTarget(rel) {
    if (rel === '' || rel === 'www')
        return ('192.0.2.1');
    var m = /^a([1-9][0-9]{0,2})$/.exec(rel);
    if (m !== null) {
        var n = parseInt(m[1], 10);
        if (n <= 254)
            return ('192.0.2.' + n);
    }
    return (null);
}

function answer(query) {
    var qname = query.name();
    var lname = qname.toLowerCase().replace(/\.+$/, '');
    var rel = null;
    if (lname === ZONE)
        rel = '';
    else if (lname.length > ZONE.length + 1 &&
        lname.slice(-(ZONE.length + 1)) === '.' + ZONE)
        rel = lname.slice(0, -(ZONE.length + 1));
    if (rel === null) {
        query.setError('refused');
        return;
    }
    query.setFlag('aa');
    var a = aTarget(rel);
    if (a === null && rel !== 'whoami') {
        query.setError('nxdomain');
        return;
    }
    query.setError('noerror');
    if (a !== null && query.type() === 'A')
        query.addAnswer(qname, new mname.ARecord(a), TTL);
    else if (rel === 'whoami' && query.type() === 'TXT')
        query.addAnswer(qname, new mname.TXTRecord(opts.name), TTL);
}

var server = mname.createServer({ name: 'bench-backend-' + opts.name,
    log: log });

server.on('query', function onQuery(query, done) {
    try {
        answer(query);
    } catch (err) {
        log.error(err, 'failed to build answer');
        query.reset();
        query.setError('servfail');
    }
    query.respond();
    done();
});

server.on('clientError', function onClientError(err) {
    log.warn(err, 'client error');
});

server.on('error', function onServerError(err) {
    log.fatal(err, 'server error');
    process.exit(1);
});

process.on('SIGTERM', function () { process.exit(0); });
process.on('SIGINT', function () { process.exit(0); });

/* A stale socket file from an earlier run would make listen() fail. */
try {
    if (fs.lstatSync(opts.socket).isSocket())
        fs.unlinkSync(opts.socket);
} catch (err) {
    if (err.code !== 'ENOENT')
        die('cannot stat ' + opts.socket + ': ' + err.message);
}

var pending = 3;
function listening() {
    if (--pending === 0) {
        process.stdout.write(JSON.stringify({ msg: 'backend ready',
            name: opts.name, socket: opts.socket, port: opts.port,
            pid: process.pid }) + '\n');
    }
}

server.listenUdp({ port: opts.port, address: opts.address, family: 'udp4' },
    listening);
server.listenTcp({ port: opts.port, address: opts.address }, listening);
server.listenBalancer({ path: opts.socket }, listening);
