// client.ts — a small ippc client written against the types that
// openapi-typescript generates from api/openapi.yaml (`./api`, made by
// tests/contract/test_openapi.py next to a copy of this file).
//
// It is only type-checked (`tsc --noEmit`), never run: if the spec stops
// giving a generator what a client needs (typed bodies, integer ids, unions
// a client can tell apart, a raw-bytes variant of PUT vars), this file stops
// compiling and `make test` fails.

import type { components, paths } from "./api";

type Schemas = components["schemas"];

// The JSON request body and answers of an operation, from the generated paths.
type Op<P extends keyof paths, M extends keyof paths[P]> = paths[P][M];
type JsonBody<O> = O extends { requestBody?: { content: { "application/json": infer B } } }
    ? B
    : never;
type JsonAnswer<O, S extends number> = O extends {
    responses: { [K in S]: { content: { "application/json": infer B } } };
}
    ? B
    : never;
type Query<O> = O extends { parameters: { query?: infer Q } } ? NonNullable<Q> : never;

type ExecuteOp = Op<"/api/v1/views/{targets}/execute", "post">;
type PushVarOp = Op<"/api/v1/views/{targets}/vars/{name}", "put">;
type PullOp = Op<"/api/v1/views/{targets}/pull", "post">;
type SubmitOp = Op<"/api/v1/tasks", "post">;
type GetTaskOp = Op<"/api/v1/tasks/{id}", "get">;
type MapOp = Op<"/api/v1/map", "post">;
type InfoOp = Op<"/api/v1/info", "get">;
type RequestOp = Op<"/api/v1/requests/{id}", "get">;

/** A direct-view call or map: done (200) or not yet (202); errors throw. */
export type Answer<Done, Pending> = { status: 200; body: Done } | { status: 202; body: Pending };

export class IppcError extends Error {
    constructor(
        readonly status: number,
        readonly code: Schemas["Error"]["error"]["code"],
        message: string,
    ) {
        super(message);
    }
}

function isError(body: unknown): body is Schemas["Error"] {
    return typeof body === "object" && body !== null && "error" in body;
}

export class IppcClient {
    constructor(
        readonly url: string,
        private readonly token: string,
    ) {}

    private async call(
        method: string,
        path: string,
        query: Record<string, string | number | boolean | undefined> = {},
        body?: unknown,
        raw?: Uint8Array<ArrayBuffer>,
    ): Promise<{ status: number; body: unknown }> {
        const q = Object.entries(query)
            .filter(([, v]) => v !== undefined)
            .map(([k, v]) => `${encodeURIComponent(k)}=${encodeURIComponent(String(v))}`)
            .join("&");
        const headers: Record<string, string> = { Authorization: `Bearer ${this.token}` };
        let payload: BodyInit | undefined;
        if (raw !== undefined) {
            headers["Content-Type"] = "application/octet-stream";
            payload = raw;
        } else if (body !== undefined) {
            headers["Content-Type"] = "application/json";
            payload = JSON.stringify(body);
        }
        const r = await fetch(`${this.url}${path}${q ? "?" + q : ""}`, {
            method,
            headers,
            body: payload,
        });
        return { status: r.status, body: await r.json() };
    }

    /** The body of a success, or throws the Error answer. */
    private done<T>(r: { status: number; body: unknown }): T {
        if (isError(r.body)) throw new IppcError(r.status, r.body.error.code, r.body.error.message);
        return r.body as T;
    }

    private answer<D, P>(r: { status: number; body: unknown }): Answer<D, P> {
        const body = this.done<D | P>(r);
        return r.status === 202 ? { status: 202, body: body as P } : { status: 200, body: body as D };
    }

    async info(): Promise<JsonAnswer<InfoOp, 200>> {
        return this.done(await this.call("GET", "/api/v1/info"));
    }

    async execute(
        targets: string,
        req: JsonBody<ExecuteOp>,
        query: Query<ExecuteOp> = {},
    ): Promise<Answer<JsonAnswer<ExecuteOp, 200>, JsonAnswer<ExecuteOp, 202>>> {
        return this.answer(await this.call("POST", `/api/v1/views/${targets}/execute`, query, req));
    }

    /** PUT vars with the array's bytes (application/octet-stream). */
    async pushRaw(
        targets: string,
        name: string,
        data: Float64Array<ArrayBuffer> | Int32Array<ArrayBuffer> | Uint8Array<ArrayBuffer>,
        shape: number[],
    ): Promise<JsonAnswer<PushVarOp, 200>> {
        const dtype: Query<PushVarOp>["dtype"] =
            data instanceof Float64Array ? "float64" : data instanceof Int32Array ? "int32" : "uint8";
        const query: Query<PushVarOp> = { dtype, shape: shape.join(",") };
        const bytes = new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
        return this.done(
            await this.call("PUT", `/api/v1/views/${targets}/vars/${name}`, query, undefined, bytes),
        );
    }

    async pull(targets: string, req: JsonBody<PullOp>): Promise<JsonAnswer<PullOp, 200>> {
        return this.done(await this.call("POST", `/api/v1/views/${targets}/pull`, {}, req));
    }

    /** One load-balanced task: its Task (202 at once). */
    async submit(spec: Schemas["TaskSpec"]): Promise<Schemas["Task"]> {
        const body: JsonBody<SubmitOp> = spec;
        const answer: JsonAnswer<SubmitOp, 202> = this.done(
            await this.call("POST", "/api/v1/tasks", {}, body),
        );
        if ("ids" in answer) throw new Error("one TaskSpec answered with a batch");
        return answer;
    }

    /** A batch of tasks: their ids. */
    async submitBatch(specs: Schemas["TaskSpec"][]): Promise<number[]> {
        const body: JsonBody<SubmitOp> = specs;
        const answer: JsonAnswer<SubmitOp, 202> = this.done(
            await this.call("POST", "/api/v1/tasks", {}, body),
        );
        if (!("ids" in answer)) return [answer.id];
        return answer.ids;
    }

    async task(id: number, wait?: number): Promise<JsonAnswer<GetTaskOp, 200>> {
        const query: Query<GetTaskOp> = { wait };
        return this.done(await this.call("GET", `/api/v1/tasks/${id}`, query));
    }

    async map(
        req: JsonBody<MapOp>,
        query: Query<MapOp> = {},
    ): Promise<Answer<JsonAnswer<MapOp, 200>, JsonAnswer<MapOp, 202>>> {
        return this.answer(await this.call("POST", "/api/v1/map", query, req));
    }

    async request(
        id: number,
        wait?: number,
    ): Promise<Answer<JsonAnswer<RequestOp, 200>, JsonAnswer<RequestOp, 202>>> {
        return this.answer(await this.call("GET", `/api/v1/requests/${id}`, { wait }));
    }
}

// The seed scenario and a few task calls, as a user of the client writes them.
export async function demo(c: IppcClient): Promise<number> {
    const info = await c.info();
    const live: number = info.engines;
    const wsUrl: string = info.ws_url;

    const ran = await c.execute("all", { code: "print('hi') return 6 * 7" });
    if (ran.status === 200) {
        const first: Schemas["ExecuteResult"] = ran.body.results[0];
        const out: string = first.stdout;
        const engine: number = first.engine;
        if (first.status === "error") console.log(first.ename, first.evalue, (first.traceback ?? []).join("\n"));
        console.log(out, engine, first.value);
    } else if (ran.status === 202) {
        const requestId: number = ran.body.request;
        const later = await c.request(requestId, 60);
        if (later.status === 200) console.log(later.body.status, later.body.results);
        else if (later.status === 202) console.log(later.body.finished);
    }

    const pushed = await c.pushRaw("all", "a", new Float64Array(16).map((_, i) => i), [16]);
    const targets: number[] = pushed.targets;
    const ok: boolean = pushed.results.every((r) => r.status === "ok");

    const pulled = await c.pull("all", { names: ["a", "totalsum"] });
    for (const perEngine of pulled.results) if (perEngine !== null) console.log(perEngine.length);

    const applied: JsonBody<Op<"/api/v1/views/{targets}/apply", "post">> = {
        function: "psum",
        args: [{ $ref: "a" }],
        kwargs: {},
    };
    console.log(applied);

    const t = await c.submit({ code: "return 6 * 7", tags: ["demo"], retries: 1 });
    const taskId: number = t.id;
    const done = await c.task(taskId, 60);
    const state: Schemas["Task"]["state"] = done.state;
    if (state === "completed") console.log(done.result);
    else if (done.error) console.log(done.error.ename);
    const ids: number[] = await c.submitBatch([{ function: "tsum", args: [[1, 2, 3]] }, { code: "return 1" }]);

    const m = await c.map({ function: "square", sequences: [[1, 2, 3, 4]] }, { block: false });
    if (m.status === 202) {
        const chunks: number[] = m.body.tasks;
        const again = await c.request(m.body.request, 60);
        if (again.status === 200 && again.body.tasks) console.log(chunks, again.body.results);
    } else if (m.status === 200) {
        console.log(m.body.results.length);
    }

    console.log(wsUrl, targets, ok, ids);
    return live;
}
