/* rest.h — the controller's REST API over libcurl, JSON in and out.
 *
 * One rest_client per controller (base url + bearer token); it keeps one curl
 * handle so successive calls reuse the connection.  A call either gets an HTTP
 * response (any status; the body parsed as JSON when it is JSON) or fails in
 * transport (connection refused, timeout), and says which.
 *
 * Proxies from the environment are bypassed for loopback addresses: a
 * controller on 127.0.0.1 is never reached through http_proxy.
 */
#ifndef IPPC_CLI_REST_H
#define IPPC_CLI_REST_H

#include <jansson.h>
#include <stddef.h>

typedef struct rest_client {
    void *curl; /* CURL * */
    char *base_url;
    void *headers; /* struct curl_slist * */
} rest_client;

typedef struct rest_reply {
    long http_status; /* 0 when no response arrived */
    json_t *json;     /* owned; NULL when the body was empty or not JSON */
} rest_reply;

/* Call curl_global_init once, before any thread exists. */
int rest_global_init(void);

int rest_client_init(rest_client *client, const char *base_url, const char *token);
void rest_client_free(rest_client *client);

/* method "GET" or "POST"; path like "/api/v1/engines"; body may be NULL;
 * timeout_ms 0 waits as long as it takes.  Returns 0 when a response
 * arrived (check reply->http_status), -1 on transport failure with err set. */
int rest_call(rest_client *client, const char *method, const char *path, const json_t *body,
              long timeout_ms, rest_reply *reply, char *err, size_t err_len);

/* "HTTP 404 not_found: no such engine" for an error reply. */
void rest_describe_error(const rest_reply *reply, char *buf, size_t len);

void rest_reply_free(rest_reply *reply);

#endif
