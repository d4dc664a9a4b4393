/* rest.c — libcurl + Jansson client for the controller's REST API (see rest.h). */
#include "rest.h"
#include "buf.h"
#include "jsonout.h"

#include <curl/curl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Replies larger than this are refused rather than buffered without end. */
#define REST_MAX_REPLY ((size_t)1 << 30)

typedef struct reply_buffer {
    ippc_buf text;
    int overflow;
} reply_buffer;

static size_t collect_body(char *chunk, size_t size, size_t count, void *user)
{
    reply_buffer *buffer = user;
    size_t len = size * count;

    if (len > REST_MAX_REPLY - buffer->text.len) {
        buffer->overflow = 1;
        return 0;
    }
    return buf_append(&buffer->text, chunk, len) < 0 ? 0 : len;
}

int rest_global_init(void)
{
    return curl_global_init(CURL_GLOBAL_DEFAULT) == CURLE_OK ? 0 : -1;
}

int rest_client_init(rest_client *client, const char *base_url, const char *token)
{
    char *auth;
    size_t auth_len = strlen(token) + 32;
    struct curl_slist *headers = NULL;
    struct curl_slist *next;
    size_t url_len = strlen(base_url);

    memset(client, 0, sizeof *client);
    auth = malloc(auth_len);
    client->base_url = malloc(url_len + 1);
    client->curl = curl_easy_init();
    if (auth == NULL || client->base_url == NULL || client->curl == NULL)
        goto fail;
    /* Paths start with '/': drop a trailing one from the base. */
    while (url_len > 0 && base_url[url_len - 1] == '/')
        url_len--;
    memcpy(client->base_url, base_url, url_len);
    client->base_url[url_len] = '\0';

    snprintf(auth, auth_len, "Authorization: Bearer %s", token);
    const char *lines[] = {auth, "Accept: application/json", "Content-Type: application/json",
                           "Expect:"};
    for (size_t i = 0; i < sizeof lines / sizeof lines[0]; i++) {
        next = curl_slist_append(headers, lines[i]);
        if (next == NULL)
            goto fail;
        headers = next;
    }
    client->headers = headers;
    free(auth);
    return 0;

fail:
    curl_slist_free_all(headers);
    free(auth);
    rest_client_free(client);
    return -1;
}

void rest_client_free(rest_client *client)
{
    if (client->curl != NULL)
        curl_easy_cleanup(client->curl);
    curl_slist_free_all(client->headers);
    free(client->base_url);
    memset(client, 0, sizeof *client);
}

int rest_call(rest_client *client, const char *method, const char *path, const json_t *body,
              long timeout_ms, rest_reply *reply, char *err, size_t err_len)
{
    CURL *curl = client->curl;
    char curl_err[CURL_ERROR_SIZE] = "";
    reply_buffer buffer = {0};
    char *url = NULL;
    char *body_text = NULL;
    size_t url_len = strlen(client->base_url) + strlen(path) + 1;
    CURLcode code;
    int result = -1;

    reply->http_status = 0;
    reply->json = NULL;
    url = malloc(url_len);
    if (url == NULL) {
        snprintf(err, err_len, "out of memory");
        return -1;
    }
    snprintf(url, url_len, "%s%s", client->base_url, path);
    if (body != NULL) {
        body_text = jsonout_dumps(body, JSON_COMPACT);
        if (body_text == NULL) {
            snprintf(err, err_len, "cannot encode the request as JSON");
            goto done;
        }
    }

    curl_easy_reset(curl);
    curl_easy_setopt(curl, CURLOPT_URL, url);
    curl_easy_setopt(curl, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(curl, CURLOPT_NOPROXY, "127.0.0.1,localhost,::1,0.0.0.0");
    curl_easy_setopt(curl, CURLOPT_HTTPHEADER, (struct curl_slist *)client->headers);
    curl_easy_setopt(curl, CURLOPT_ERRORBUFFER, curl_err);
    curl_easy_setopt(curl, CURLOPT_CONNECTTIMEOUT_MS, 5000L);
    curl_easy_setopt(curl, CURLOPT_TIMEOUT_MS, timeout_ms);
    curl_easy_setopt(curl, CURLOPT_WRITEFUNCTION, collect_body);
    curl_easy_setopt(curl, CURLOPT_WRITEDATA, &buffer);
    curl_easy_setopt(curl, CURLOPT_USERAGENT, "ippc-cli");
    if (strcmp(method, "GET") != 0)
        curl_easy_setopt(curl, CURLOPT_CUSTOMREQUEST, method);
    if (body_text != NULL) {
        curl_easy_setopt(curl, CURLOPT_POSTFIELDS, body_text);
        curl_easy_setopt(curl, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)strlen(body_text));
    }

    code = curl_easy_perform(curl);
    if (code != CURLE_OK) {
        if (buffer.overflow)
            snprintf(err, err_len, "the reply from %s is larger than %zu bytes", url,
                     REST_MAX_REPLY);
        else
            snprintf(err, err_len, "%s", curl_err[0] != '\0' ? curl_err : curl_easy_strerror(code));
        goto done;
    }
    curl_easy_getinfo(curl, CURLINFO_RESPONSE_CODE, &reply->http_status);
    if (buffer.text.len > 0)
        reply->json = json_loadb(buffer.text.data, buffer.text.len, 0, NULL);
    result = 0;

done:
    buf_free(&buffer.text);
    free(body_text);
    free(url);
    return result;
}

void rest_describe_error(const rest_reply *reply, char *buf, size_t len)
{
    const json_t *error = json_object_get(reply->json, "error");
    const char *code = json_string_value(json_object_get(error, "code"));
    const char *message = json_string_value(json_object_get(error, "message"));

    if (code != NULL && message != NULL)
        snprintf(buf, len, "HTTP %ld %s: %s", reply->http_status, code, message);
    else if (message != NULL)
        snprintf(buf, len, "HTTP %ld: %s", reply->http_status, message);
    else
        snprintf(buf, len, "HTTP %ld", reply->http_status);
}

void rest_reply_free(rest_reply *reply)
{
    json_decref(reply->json);
    reply->json = NULL;
}
