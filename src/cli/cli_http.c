/* cli_http.c - the client's HTTP side: one libcurl easy handle per run.
 *
 * Resolves where to talk to (--url, FNMESH_URL, http://127.0.0.1:8080) and
 * with which admin token (--token, FNMESH_TOKEN, $FNMESH_DATA/admin.token or
 * ./fnmesh-data/admin.token), sends one request at a time and turns every
 * failure into the client's single error format. The token file is read only
 * when a /system/v1 request is made, so `invoke` works without one.
 *
 * Ownership: fm_cli_http owns its base URL copy, the token read from file
 * and the curl handle; a response owns its body. No redirects are followed
 * and no response body is interpreted here beyond the error envelope. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <curl/curl.h>

#include "cli/cli_int.h"

#define FM_CLI_DEFAULT_URL "http://127.0.0.1:8080"
#define FM_CLI_SYSTEM_PREFIX "/system/v1"
#define FM_CLI_TOKEN_MAX 4096

struct fm_cli_http {
    CURL *curl;
    char *url;         /* base URL without trailing '/' */
    const char *token; /* --token or FNMESH_TOKEN (borrowed), else from file */
    char *file_token;  /* read from token_path, NULL when there is none */
    char *token_path;  /* where the token file was looked up */
    bool token_looked; /* token_path already tried */
    long timeout_ms;
    bool json;
    char errbuf[CURL_ERROR_SIZE];
};

static const char *env_nonempty(const char *name) {
    const char *v = getenv(name);
    return v && *v ? v : NULL;
}

int fm_cli_http_create(const fm_cli_opts *o, fm_cli_http **out) {
    *out = NULL;
    const char *url = o->url ? o->url : env_nonempty("FNMESH_URL");
    if (!url) url = FM_CLI_DEFAULT_URL;
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
        fputs("error: cannot initialise libcurl\n", stderr);
        return FM_CLI_ERR;
    }
    fm_cli_http *h = calloc(1, sizeof *h);
    if (!h) {
        curl_global_cleanup();
        return fm_cli_nomem();
    }
    h->url = strdup(url);
    h->curl = h->url ? curl_easy_init() : NULL;
    if (!h->curl) {
        fm_cli_http_destroy(h);
        return fm_cli_nomem();
    }
    size_t n = strlen(h->url);
    while (n > 0 && h->url[n - 1] == '/')
        h->url[--n] = '\0';
    h->token = o->token ? o->token : env_nonempty("FNMESH_TOKEN");
    h->timeout_ms = o->timeout_ms;
    h->json = o->json;
    *out = h;
    return FM_CLI_OK;
}

void fm_cli_http_destroy(fm_cli_http *h) {
    if (!h) return;
    if (h->curl) curl_easy_cleanup(h->curl);
    free(h->url);
    free(h->file_token);
    free(h->token_path);
    free(h);
    curl_global_cleanup();
}

/* ---- admin token ----------------------------------------------------- */

static char *trim(char *s) {
    while (*s == ' ' || *s == '\t' || *s == '\n' || *s == '\r')
        s++;
    size_t n = strlen(s);
    while (n > 0 && (s[n - 1] == ' ' || s[n - 1] == '\t' || s[n - 1] == '\n' || s[n - 1] == '\r'))
        s[--n] = '\0';
    return s;
}

/* Reads the token file into h->file_token; a missing file is no error. */
static int read_token_file(fm_cli_http *h) {
    FILE *f = fopen(h->token_path, "r");
    if (!f) {
        if (errno == ENOENT || errno == ENOTDIR) return FM_CLI_OK;
        fprintf(stderr, "error: cannot read %s: %s\n", h->token_path, strerror(errno));
        return FM_CLI_ERR;
    }
    char buf[FM_CLI_TOKEN_MAX + 1];
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    bool bad = ferror(f);
    fclose(f);
    if (bad) {
        fprintf(stderr, "error: cannot read %s\n", h->token_path);
        return FM_CLI_ERR;
    }
    buf[n] = '\0';
    char *tok = trim(buf);
    if (*tok && !(h->file_token = strdup(tok))) return fm_cli_nomem();
    return FM_CLI_OK;
}

/* The token to send, looked up once; *token stays NULL when there is none. */
static int get_token(fm_cli_http *h, const char **token) {
    if (!h->token && !h->token_looked) {
        h->token_looked = true;
        const char *data = env_nonempty("FNMESH_DATA");
        h->token_path =
            data ? fm_cli_fmt("%s/admin.token", data) : fm_cli_fmt("fnmesh-data/admin.token");
        if (!h->token_path) return fm_cli_nomem();
        int rc = read_token_file(h);
        if (rc != FM_CLI_OK) return rc;
    }
    *token = h->token ? h->token : h->file_token;
    for (const char *p = *token; p && *p; p++) {
        if ((unsigned char)*p < 0x20 || *p == 0x7f) {
            fputs("error: the admin token contains control characters\n", stderr);
            return FM_CLI_ERR;
        }
    }
    return FM_CLI_OK;
}

/* ---- request --------------------------------------------------------- */

static size_t on_body(char *p, size_t size, size_t n, void *ud) {
    fm_cli_buf *b = ud;
    fm_cli_buf_append(b, p, size * n);
    return b->oom ? 0 : size * n;
}

/* Builds the request headers; NULL when out of memory. */
static struct curl_slist *make_headers(const fm_cli_req *req, const char *token) {
    struct curl_slist *hs = NULL, *t;
    char *ct = req->content_type ? fm_cli_fmt("Content-Type: %s", req->content_type) : NULL;
    char *auth = token ? fm_cli_fmt("Authorization: Bearer %s", token) : NULL;
    bool ok = (!req->content_type || ct) && (!token || auth);
    const char *lines[] = {"Accept: application/json", "Expect:", ct, auth};
    for (size_t i = 0; ok && i < sizeof lines / sizeof *lines; i++) {
        if (!lines[i]) continue;
        if (!(t = curl_slist_append(hs, lines[i])))
            ok = false;
        else
            hs = t;
    }
    free(ct);
    free(auth);
    if (!ok) {
        curl_slist_free_all(hs);
        return NULL;
    }
    return hs;
}

static void set_request(fm_cli_http *h, const fm_cli_req *req, const char *url,
                        struct curl_slist *hs, fm_cli_buf *body) {
    CURL *c = h->curl;
    curl_easy_reset(c);
    h->errbuf[0] = '\0';
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, h->timeout_ms);
    curl_easy_setopt(c, CURLOPT_ERRORBUFFER, h->errbuf);
    curl_easy_setopt(c, CURLOPT_USERAGENT, "fnmesh/" FM_VERSION);
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, hs);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, body);
    if (req->body) {
        curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)req->body_len);
        curl_easy_setopt(c, CURLOPT_POSTFIELDS, req->body);
    }
    if (strcmp(req->method, "GET") == 0)
        curl_easy_setopt(c, CURLOPT_HTTPGET, 1L);
    else if (!req->body || strcmp(req->method, "POST") != 0)
        curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, req->method);
}

/* Prints the server's error answer in the client's one error format. */
static void print_server_error(const fm_cli_http *h, const fm_cli_resp *r, bool had_token) {
    json_t *root = r->body.data ? json_loadb(r->body.data, r->body.len, 0, NULL) : NULL;
    json_t *err = json_object_get(root, "error");
    const char *code = fm_cli_json_str(err, "code", NULL);
    const char *msg = fm_cli_json_str(err, "message", NULL);
    if (code && msg) {
        fprintf(stderr, "error: %s (%s, HTTP %ld)\n", msg, code, r->status);
    } else if (r->body.len > 0) {
        int n = (int)strcspn(r->body.data, "\r\n");
        fprintf(stderr, "error: unexpected answer (HTTP %ld): %.*s\n", r->status, n > 200 ? 200 : n,
                r->body.data);
    } else {
        fprintf(stderr, "error: unexpected answer (HTTP %ld)\n", r->status);
    }
    if (r->status == 401 && !had_token)
        fprintf(stderr,
                "hint: no admin token found (looked for %s); pass --token or set "
                "FNMESH_TOKEN\n",
                h->token_path ? h->token_path : "fnmesh-data/admin.token");
    json_decref(root);
}

static int perform(fm_cli_http *h, const fm_cli_req *req, const char *token, fm_cli_resp *resp) {
    char *url = fm_cli_fmt("%s%s", h->url, req->path);
    struct curl_slist *hs = url ? make_headers(req, token) : NULL;
    if (!hs) {
        free(url);
        return fm_cli_nomem();
    }
    set_request(h, req, url, hs, &resp->body);
    CURLcode res = curl_easy_perform(h->curl);
    curl_slist_free_all(hs);
    free(url);
    if (res != CURLE_OK) {
        if (resp->body.oom) return fm_cli_nomem();
        fprintf(stderr, "error: cannot reach %s: %s\n", h->url,
                h->errbuf[0] ? h->errbuf : curl_easy_strerror(res));
        return FM_CLI_ERR;
    }
    curl_easy_getinfo(h->curl, CURLINFO_RESPONSE_CODE, &resp->status);
    const char *ct = NULL;
    curl_easy_getinfo(h->curl, CURLINFO_CONTENT_TYPE, &ct);
    resp->json = ct && (!strncasecmp(ct, "application/json", 16) || strcasestr(ct, "+json"));
    return FM_CLI_OK;
}

int fm_cli_http_call(fm_cli_http *h, const fm_cli_req *req, fm_cli_resp *resp) {
    *resp = (fm_cli_resp){0};
    const char *token = NULL;
    if (strncmp(req->path, FM_CLI_SYSTEM_PREFIX "/", sizeof FM_CLI_SYSTEM_PREFIX) == 0) {
        int rc = get_token(h, &token);
        if (rc != FM_CLI_OK) return rc;
    }
    int rc = perform(h, req, token, resp);
    if (rc == FM_CLI_OK && (resp->status < 200 || resp->status > 299)) {
        print_server_error(h, resp, token != NULL);
        if (h->json && resp->body.len > 0) fm_cli_resp_print_raw(resp);
        rc = FM_CLI_ERR;
    }
    if (rc != FM_CLI_OK) fm_cli_resp_dispose(resp);
    return rc;
}

/* ---- streaming ------------------------------------------------------- */

typedef struct stream_ctx {
    fm_cli_http *h;
    fm_cli_on_data on_data;
    void *ud;
    fm_cli_resp *resp; /* collects a non-2xx body */
    bool stopped;
} stream_ctx;

static size_t on_stream(char *p, size_t size, size_t n, void *ud) {
    stream_ctx *sc = ud;
    long status = 0;
    curl_easy_getinfo(sc->h->curl, CURLINFO_RESPONSE_CODE, &status);
    if (status < 200 || status > 299) return on_body(p, size, n, &sc->resp->body);
    if (!sc->on_data(p, size * n, sc->ud)) {
        sc->stopped = true;
        return 0;
    }
    return size * n;
}

int fm_cli_http_stream(fm_cli_http *h, const fm_cli_req *req, fm_cli_on_data on_data, void *ud) {
    fm_cli_resp resp = {0};
    const char *token = NULL;
    if (strncmp(req->path, FM_CLI_SYSTEM_PREFIX "/", sizeof FM_CLI_SYSTEM_PREFIX) == 0) {
        int rc = get_token(h, &token);
        if (rc != FM_CLI_OK) return rc;
    }
    char *url = fm_cli_fmt("%s%s", h->url, req->path);
    struct curl_slist *hs = url ? make_headers(req, token) : NULL;
    if (!hs) {
        free(url);
        return fm_cli_nomem();
    }
    stream_ctx sc = {.h = h, .on_data = on_data, .ud = ud, .resp = &resp};
    set_request(h, req, url, hs, &resp.body);
    curl_easy_setopt(h->curl, CURLOPT_TIMEOUT_MS, 0L);
    curl_easy_setopt(h->curl, CURLOPT_CONNECTTIMEOUT_MS, h->timeout_ms);
    curl_easy_setopt(h->curl, CURLOPT_WRITEFUNCTION, on_stream);
    curl_easy_setopt(h->curl, CURLOPT_WRITEDATA, &sc);
    CURLcode res = curl_easy_perform(h->curl);
    curl_slist_free_all(hs);
    free(url);
    int rc = FM_CLI_OK;
    if (res != CURLE_OK && !(res == CURLE_WRITE_ERROR && sc.stopped)) {
        if (resp.body.oom) {
            rc = fm_cli_nomem();
        } else {
            fprintf(stderr, "error: %s %s: %s\n", res == CURLE_COULDNT_CONNECT ? "cannot reach" : "lost",
                    h->url, h->errbuf[0] ? h->errbuf : curl_easy_strerror(res));
            rc = FM_CLI_ERR;
        }
    } else {
        curl_easy_getinfo(h->curl, CURLINFO_RESPONSE_CODE, &resp.status);
        if (resp.status < 200 || resp.status > 299) {
            print_server_error(h, &resp, token != NULL);
            if (h->json && resp.body.len > 0) fm_cli_resp_print_raw(&resp);
            rc = FM_CLI_ERR;
        }
    }
    fm_cli_resp_dispose(&resp);
    return rc;
}

/* ---- response -------------------------------------------------------- */

int fm_cli_resp_print_raw(const fm_cli_resp *resp) {
    if (resp->body.len == 0) return FM_CLI_OK;
    fwrite(resp->body.data, 1, resp->body.len, stdout);
    if (resp->body.data[resp->body.len - 1] != '\n') putchar('\n');
    return FM_CLI_OK;
}

int fm_cli_resp_json(const fm_cli_resp *resp, json_t **out) {
    json_error_t err;
    *out = resp->body.data ? json_loadb(resp->body.data, resp->body.len, 0, &err) : NULL;
    if (!*out) {
        fprintf(stderr, "error: unexpected answer (HTTP %ld): body is not JSON\n", resp->status);
        return FM_CLI_ERR;
    }
    return FM_CLI_OK;
}

void fm_cli_resp_dispose(fm_cli_resp *resp) {
    fm_cli_buf_dispose(&resp->body);
    *resp = (fm_cli_resp){0};
}
