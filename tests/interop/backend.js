#!/usr/bin/env node
/*
 * A tiny authoritative DNS server built on node-mname (npm "mname"), used as
 * a real backend in the mname-balancer interop tests, and behind every
 * proxy in bench/curve.py.
 *
 * It listens on an AF_UNIX socket through Server#listenBalancer(), i.e. it
 * speaks the framed balancer protocol; with --port it also serves plain DNS
 * on that UDP and TCP port (the same answers, for proxies that speak DNS).
 *
 * Usage:
 *   node backend.js --socket PATH --name NAME [--zone ZONE] [--cleanup]
 *                   [--port PORT [--address ADDR]]
 *
 *   --socket PATH  AF_UNIX socket to listen on; a stale socket file at PATH is
 *                  unlinked first (as a restarted Binder backend does).
 *   --name NAME    identity of this backend, returned by TXT whoami.<zone>
 *                  and used as the logger name "backend-NAME".
 *   --zone ZONE    zone served (default example.com).
 *   --port PORT    also serve plain DNS over UDP and TCP on PORT, at
 *                  --address (default 127.0.0.1).
 *   --cleanup      on SIGTERM/SIGINT also unlink PATH before exiting.  By
 *                  default the socket file is left behind, like a backend
 *                  that died, so a balancer sees ECONNREFUSED (not ENOENT).
 *
 * Environment: LOG_LEVEL (trace|debug|info|warn|error|fatal, default info).
 *
 * Answers (names are matched case-insensitively):
 *   A   <zone>, www.<zone>      -> 192.0.2.1, TTL 60
 *   A   a<N>.<zone>, N 1..254   -> 192.0.2.N, TTL 60
 *   A   h<N>.<zone>, N 0..99999 -> 10.(N>>16).((N>>8)&255).(N&255), TTL 60
 *                                  (N in decimal; the many names of
 *                                  bench/run.py --cached's mix, answered as
 *                                  mname-demo-backend does)
 *   TXT whoami.<zone>           -> "NAME"
 *   TXT client.<zone>           -> "<ip> <port>" of the client as the backend
 *                                  sees it (query.src.address/.port)
 *   TXT big.<zone>              -> 40 TXT records of 100 characters each (about
 *                                  4.6 KB): over UDP node-mname truncates it
 *                                  itself (TC set, no answers); over TCP the
 *                                  whole answer is sent.
 *   other types for the names above -> NOERROR, no answers (NODATA)
 *   any other name in the zone  -> NXDOMAIN, no answers
 *   names outside the zone      -> REFUSED
 *
 * Once listening it writes a bunyan record with "msg":"backend ready" to
 * stdout (whatever LOG_LEVEL is).  SIGTERM or SIGINT -> exit status 0.
 */

'use strict';

var fs = require('fs');
var path = require('path');

var mname = require('mname');
/*
 * bunyan is a dependency of mname; load the very copy mname uses rather than
 * declaring a second dependency on it.
 */
var bunyan = require(require.resolve('bunyan', {
    paths: [ path.dirname(require.resolve('mname')) ]
}));

var USAGE = 'usage: node backend.js --socket PATH --name NAME ' +
    '[--zone ZONE] [--cleanup] [--port PORT [--address ADDR]]';
var TTL = 60;
var BIG_COUNT = 40;
var BIG_LEN = 100;
var LEVELS = [ 'trace', 'debug', 'info', 'warn', 'error', 'fatal' ];

function die(msg, code) {
    process.stderr.write('backend.js: ' + msg + '\n');
    process.exit(code === undefined ? 2 : code);
}

function parseArgs(argv) {
    var opts = { socket: null, name: null, zone: 'example.com',
        cleanup: false, port: null, address: '127.0.0.1' };
    var valued = { '--socket': 'socket', '--name': 'name', '--zone': 'zone',
        '--port': 'port', '--address': 'address' };

    for (var i = 0; i < argv.length; i++) {
        let arg = argv[i];
        let val;
        const eq = arg.indexOf('=');
        if (arg.slice(0, 2) === '--' && eq !== -1) {
            val = arg.slice(eq + 1);
            arg = arg.slice(0, eq);
        }
        if (arg === '--help' || arg === '-h') {
            process.stdout.write(USAGE + '\n');
            process.exit(0);
        } else if (arg === '--cleanup') {
            if (val !== undefined)
                die('--cleanup takes no value\n' + USAGE);
            opts.cleanup = true;
        } else if (valued.hasOwnProperty(arg)) {
            if (val === undefined) {
                if (i + 1 >= argv.length)
                    die(arg + ' needs a value\n' + USAGE);
                val = argv[++i];
            }
            if (val === '')
                die(arg + ' must not be empty\n' + USAGE);
            opts[valued[arg]] = val;
        } else {
            die('unknown argument "' + argv[i] + '"\n' + USAGE);
        }
    }
    if (opts.socket === null)
        die('--socket is required\n' + USAGE);
    if (opts.name === null)
        die('--name is required\n' + USAGE);
    if (opts.port !== null) {
        opts.port = parseInt(opts.port, 10);
        if (!(opts.port > 0 && opts.port < 65536))
            die('--port must be a port number\n' + USAGE);
    }
    opts.zone = opts.zone.toLowerCase().replace(/\.+$/, '');
    if (opts.zone === '')
        die('--zone must name a zone, not the root\n' + USAGE);
    return (opts);
}

var opts = parseArgs(process.argv.slice(2));

var level = process.env.LOG_LEVEL || 'info';
if (LEVELS.indexOf(level.toLowerCase()) === -1)
    die('invalid LOG_LEVEL "' + level + '" (want one of ' +
        LEVELS.join(', ') + ')');
level = level.toLowerCase();

var logName = 'backend-' + opts.name;
var log = bunyan.createLogger({
    name: logName,
    level: level,
    stream: process.stdout,
    serializers: mname.bunyan.serializers
});

/* The readiness record must appear regardless of LOG_LEVEL. */
var readyLog = bunyan.createLogger({
    name: logName,
    level: 'trace',
    stream: process.stdout
});

var BIG_TEXTS = [];
(function buildBig() {
    for (var i = 0; i < BIG_COUNT; i++) {
        var s = 'big-' + ('0' + i).slice(-2) + '-';
        while (s.length < BIG_LEN)
            s += String.fromCharCode(97 + (s.length % 26));
        BIG_TEXTS.push(s);
    }
})();

/*
 * Returns the label(s) of lname relative to the zone ('' for the apex), or
 * null when lname is not inside the zone.
 */
function relativeName(lname) {
    if (lname === opts.zone)
        return ('');
    var suffix = '.' + opts.zone;
    if (lname.length > suffix.length &&
        lname.slice(-suffix.length) === suffix)
        return (lname.slice(0, -suffix.length));
    return (null);
}

/* Address for an A name relative to the zone, or null. */
function aTarget(rel) {
    if (rel === '' || rel === 'www')
        return ('192.0.2.1');
    var m = /^a([1-9][0-9]{0,2})$/.exec(rel);
    if (m !== null) {
        var n = parseInt(m[1], 10);
        if (n >= 1 && n <= 254)
            return ('192.0.2.' + n);
    }
    var h = /^h([0-9]+)$/.exec(rel);
    if (h !== null) {
        var k = parseInt(h[1], 10);
        if (k <= 99999)
            return ('10.' + (k >> 16) + '.' + ((k >> 8) & 255) + '.' +
                (k & 255));
    }
    return (null);
}

/* TXT strings for a TXT name relative to the zone, or null. */
function txtTargets(rel, query) {
    switch (rel) {
    case 'whoami':
        return ([ opts.name ]);
    case 'client':
        return ([ query.src.address + ' ' + query.src.port ]);
    case 'big':
        return (BIG_TEXTS);
    default:
        return (null);
    }
}

function answer(query) {
    var qname = query.name();
    var qtype = query.type();
    var rel = relativeName(qname.toLowerCase().replace(/\.+$/, ''));

    if (rel === null) {
        query.setError('refused');
        return;
    }

    query.setFlag('aa');

    var a = aTarget(rel);
    var txts = (a === null) ? txtTargets(rel, query) : null;

    if (a === null && txts === null) {
        query.setError('nxdomain');
        return;
    }

    /* The name exists; without a matching record this is NODATA. */
    query.setError('noerror');
    if (a !== null && qtype === 'A') {
        query.addAnswer(qname, new mname.ARecord(a), TTL);
    } else if (txts !== null && qtype === 'TXT') {
        txts.forEach(function (t) {
            query.addAnswer(qname, new mname.TXTRecord(t), TTL);
        });
    }
}

var server = mname.createServer({ name: logName, log: log });

server.on('query', function onQuery(query, done) {
    try {
        answer(query);
    } catch (err) {
        log.error(err, 'failed to build answer');
        query.reset();
        query.setError('servfail');
    }
    /* Built only when it will be written: a record per query costs. */
    if (log.debug()) log.debug({
        qname: query.name(),
        qtype: query.type(),
        family: query.src ? query.src.family : undefined,
        client: query.src ?
            (query.src.address + ':' + query.src.port) : undefined,
        rcode: query.error(),
        answers: query.response.header.anCount
    }, 'answering query');
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

function removeStaleSocket(p) {
    var st;
    try {
        st = fs.lstatSync(p);
    } catch (err) {
        if (err.code === 'ENOENT')
            return;
        die('cannot stat ' + p + ': ' + err.message, 1);
    }
    if (!st.isSocket())
        die(p + ' exists and is not a socket; refusing to remove it', 1);
    fs.unlinkSync(p);
    log.info({ socket: p }, 'removed stale socket');
}

removeStaleSocket(opts.socket);

function shutdown(signal) {
    log.info({ signal: signal }, 'exiting on signal');
    if (opts.cleanup) {
        try {
            fs.unlinkSync(opts.socket);
        } catch (err) {
            /* already gone: nothing to clean */
        }
    }
    process.exit(0);
}
process.on('SIGTERM', function () { shutdown('SIGTERM'); });
process.on('SIGINT', function () { shutdown('SIGINT'); });

/* Ready once every listener is: the balancer socket, and with --port the
 * plain UDP and TCP port too. */
var pending = (opts.port === null) ? 1 : 3;
function onListening() {
    if (--pending > 0)
        return;
    readyLog.info({
        socket: opts.socket,
        backend: opts.name,
        zone: opts.zone,
        port: opts.port,
        pid: process.pid
    }, 'backend ready');
}
if (opts.port !== null) {
    server.listenUdp({ port: opts.port, address: opts.address,
        family: 'udp4' }, onListening);
    server.listenTcp({ port: opts.port, address: opts.address }, onListening);
}
server.listenBalancer({ path: opts.socket }, onListening);
