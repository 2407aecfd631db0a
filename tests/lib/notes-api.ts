// A stand-in for the two comment APIs ci/post-note.sh talks to, on 127.0.0.1: GitLab's merge-request
// notes (/api/v4/projects/:id/merge_requests/:iid/notes, PRIVATE-TOKEN) and GitHub's issue comments
// (/repos/:owner/:repo/issues/:n/comments, Authorization: Bearer), paged by per_page and page as they are.
import * as http from "node:http";
import { AddressInfo } from "node:net";

export interface Note {
  id: number;
  body: string;
}

export interface NotesApi {
  /** The base URL: CI_API_V4_URL is `${url}/api/v4`, GITHUB_API_URL is `url`. */
  url: string;
  /** The notes of each merge or pull request, by its path ("gitlab:7:3", "github:owner/repo:3"). */
  threads: Map<string, Note[]>;
  /** Every request as "METHOD path", in order. */
  requests: string[];
  close(): Promise<void>;
}

const GITLAB = /^\/api\/v4\/projects\/([^/]+)\/merge_requests\/(\d+)\/notes(?:\/(\d+))?$/;
const GITHUB_LIST = /^\/repos\/([^/]+\/[^/]+)\/issues\/(\d+)\/comments$/;
const GITHUB_ITEM = /^\/repos\/([^/]+\/[^/]+)\/issues\/comments\/(\d+)$/;

/** Serves both APIs; requests without `token` are refused with 401, as the real ones do. */
export async function startNotesApi(token: string): Promise<NotesApi> {
  const threads = new Map<string, Note[]>();
  const requests: string[] = [];
  let nextId = 1000;
  const thread = (key: string): Note[] => threads.get(key) ?? threads.set(key, []).get(key)!;

  const server = http.createServer((req, res) => {
    let raw = "";
    req.on("data", (chunk) => (raw += chunk));
    req.on("end", () => {
      const url = new URL(req.url ?? "/", "http://127.0.0.1");
      requests.push(`${req.method} ${url.pathname}`);
      const send = (status: number, value: unknown): void => {
        res.writeHead(status, { "Content-Type": "application/json" });
        res.end(JSON.stringify(value));
      };
      const gitlab = GITLAB.exec(url.pathname);
      const githubList = GITHUB_LIST.exec(url.pathname);
      const githubItem = GITHUB_ITEM.exec(url.pathname);
      const authorized = gitlab ? req.headers["private-token"] === token : req.headers.authorization === `Bearer ${token}`;
      if (!authorized) return send(401, { message: "401 Unauthorized" });

      const page = (notes: Note[]): void => {
        const perPage = Number(url.searchParams.get("per_page") ?? 20);
        const n = Number(url.searchParams.get("page") ?? 1);
        send(200, notes.slice((n - 1) * perPage, n * perPage));
      };
      const create = (notes: Note[]): void => {
        const note = { id: nextId++, body: String(JSON.parse(raw).body) };
        notes.push(note);
        send(201, note);
      };
      const update = (id: number): void => {
        const note = [...threads.values()].flat().find((n) => n.id === id);
        if (!note) return send(404, { message: "404 Not found" });
        note.body = String(JSON.parse(raw).body);
        send(200, note);
      };

      if (gitlab) {
        const notes = thread(`gitlab:${gitlab[1]}:${gitlab[2]}`);
        if (req.method === "GET" && !gitlab[3]) return page(notes);
        if (req.method === "POST" && !gitlab[3]) return create(notes);
        if (req.method === "PUT" && gitlab[3]) return update(Number(gitlab[3]));
      } else if (githubList) {
        const notes = thread(`github:${githubList[1]}:${githubList[2]}`);
        if (req.method === "GET") return page(notes);
        if (req.method === "POST") return create(notes);
      } else if (githubItem && req.method === "PATCH") {
        return update(Number(githubItem[2]));
      }
      send(405, { message: `${req.method} ${url.pathname} is not served here` });
    });
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}`,
    threads,
    requests,
    close: () => new Promise<void>((resolve) => server.close(() => resolve())),
  };
}
